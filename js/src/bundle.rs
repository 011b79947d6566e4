//! App bundles in CCF's format: `app.json` (endpoint metadata) plus the JS
//! modules under `src/`.
//!
//! ```text
//! app.json   {"endpoints": {"/log/{id}": {"get": {"js_module": "logging.js",
//!              "js_function": "get", "mode": "readonly",
//!              "authn_policies": ["user_cert"], ...}}}}
//! src/logging.js, src/util.js, ...
//! ```
//!
//! A bundle is checked when it is loaded (every endpoint names a module the
//! bundle has, modes and methods are known), so a request never finds a
//! half-valid app.
//!
//! A top-level `"engine"` in `app.json` chooses the JS engine that runs the
//! app: `"v8"` (the default) or `"quickjs"`. Both give the same `ccf` API
//! and the same responses (`js/tests/conformance.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How an endpoint touches the KV store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// May write; runs on the primary (a backup forwards it).
    Readwrite,
    /// Reads committed state wherever it lands.
    Readonly,
    /// Reads historical state (treated as read-only for now).
    Historical,
}

/// One endpoint's metadata, as in CCF's `app.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDef {
    pub js_module: String,
    pub js_function: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// `user_cert`, `member_cert`, `no_auth`, ... ; empty means no auth.
    #[serde(default)]
    pub authn_policies: Vec<String>,
    /// `sometimes` (default), `always` or `never`.
    #[serde(default = "default_forwarding")]
    pub forwarding_required: String,
    /// CCF's `interpreter_reuse` (`{"key": "..."}`): endpoints with the
    /// same key share a JS context that keeps module state and globals
    /// between requests (see [`EndpointDef::reuse_key`]).
    #[serde(default)]
    pub interpreter_reuse: Option<serde_json::Value>,
    #[serde(default)]
    pub openapi: Option<serde_json::Value>,
}

impl EndpointDef {
    /// The key of the endpoint's `interpreter_reuse`, if it opts in.
    pub fn reuse_key(&self) -> Option<&str> {
        self.interpreter_reuse.as_ref()?.get("key")?.as_str()
    }
}

fn default_mode() -> Mode {
    Mode::Readwrite
}

fn default_forwarding() -> String {
    "sometimes".to_string()
}

/// The JS engine that runs an app's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    V8,
    QuickJs,
}

impl Engine {
    /// The name used in `app.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::V8 => "v8",
            Engine::QuickJs => "quickjs",
        }
    }

    /// `"v8"` or `"quickjs"`; anything else is `None`.
    pub fn from_name(name: &str) -> Option<Engine> {
        match name {
            "v8" => Some(Engine::V8),
            "quickjs" => Some(Engine::QuickJs),
            _ => None,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct AppJson {
    endpoints: BTreeMap<String, BTreeMap<String, EndpointDef>>,
    /// `"v8"` (default) or `"quickjs"`.
    #[serde(default)]
    engine: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid app.json: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("endpoint {method} {path}: {message}")]
    Endpoint {
        method: String,
        path: String,
        message: String,
    },
}

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];
const FORWARDING: [&str; 3] = ["sometimes", "always", "never"];

/// A loaded, checked app: its endpoints and the source of every module.
#[derive(Debug, Clone)]
pub struct AppBundle {
    /// `(path template, lowercase method)` → endpoint.
    endpoints: BTreeMap<(String, String), EndpointDef>,
    /// Module name (path under `src/`, `/`-separated, no leading `/`) → source.
    modules: BTreeMap<String, String>,
    engine: Engine,
}

impl AppBundle {
    /// Loads `DIR/app.json` and every `.js`/`.mjs` file under `DIR/src/`.
    pub fn load(dir: &Path) -> Result<AppBundle, BundleError> {
        let meta_path = dir.join("app.json");
        let meta = std::fs::read_to_string(&meta_path).map_err(|source| BundleError::Io {
            path: meta_path.clone(),
            source,
        })?;
        let mut modules = BTreeMap::new();
        let src = dir.join("src");
        collect_modules(&src, &src, &mut modules)?;
        AppBundle::from_parts(&meta, modules).map_err(|e| match e {
            BundleError::Metadata { message, .. } => BundleError::Metadata {
                path: meta_path,
                message,
            },
            other => other,
        })
    }

    /// Builds a bundle from `app.json` text and module sources (keys are
    /// module names such as `logging.js` or `lib/util.js`).
    pub fn from_parts(
        app_json: &str,
        modules: BTreeMap<String, String>,
    ) -> Result<AppBundle, BundleError> {
        let parsed: AppJson =
            serde_json::from_str(app_json).map_err(|e| BundleError::Metadata {
                path: PathBuf::from("app.json"),
                message: e.to_string(),
            })?;
        let engine = match parsed.engine.as_deref() {
            None => Engine::default(),
            Some(name) => Engine::from_name(name).ok_or_else(|| BundleError::Metadata {
                path: PathBuf::from("app.json"),
                message: format!("unknown engine {name:?} (expected \"v8\" or \"quickjs\")"),
            })?,
        };
        let modules: BTreeMap<String, String> = modules
            .into_iter()
            .map(|(name, source)| (normalize_module_name(&name), source))
            .collect();
        let mut endpoints = BTreeMap::new();
        for (path, methods) in parsed.endpoints {
            let bad = |method: &str, message: String| BundleError::Endpoint {
                method: method.to_string(),
                path: path.clone(),
                message,
            };
            if !path.starts_with('/') {
                return Err(bad("*", "paths must start with '/'".into()));
            }
            for (method, def) in methods {
                let method = method.to_ascii_lowercase();
                if !METHODS.contains(&method.as_str()) {
                    return Err(bad(
                        &method,
                        format!("unknown HTTP method (expected one of {METHODS:?})"),
                    ));
                }
                let module = normalize_module_name(&def.js_module);
                if !modules.contains_key(&module) {
                    return Err(bad(
                        &method,
                        format!("js_module {:?} is not in the bundle's src/", def.js_module),
                    ));
                }
                if def.js_function.is_empty() {
                    return Err(bad(&method, "js_function is empty".into()));
                }
                if !FORWARDING.contains(&def.forwarding_required.as_str()) {
                    return Err(bad(
                        &method,
                        format!("forwarding_required must be one of {FORWARDING:?}"),
                    ));
                }
                if let Some(reuse) = &def.interpreter_reuse {
                    let key = reuse.get("key").and_then(|k| k.as_str());
                    if !reuse.is_object() || key.is_none_or(str::is_empty) {
                        return Err(bad(
                            &method,
                            "interpreter_reuse must be {\"key\": \"a non-empty string\"}".into(),
                        ));
                    }
                }
                let def = EndpointDef {
                    js_module: module,
                    ..def
                };
                endpoints.insert((path.clone(), method), def);
            }
        }
        Ok(AppBundle {
            endpoints,
            modules,
            engine,
        })
    }

    /// The engine that runs this app (`"engine"` in `app.json`, V8 if absent).
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The endpoint for `method` on `path` (the part after `/app`), with
    /// the values of `{name}` segments of its template.
    pub fn find(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(EndpointDef, BTreeMap<String, String>)> {
        let method = method.to_ascii_lowercase();
        if let Some(def) = self.endpoints.get(&(path.to_string(), method.clone())) {
            return Some((def.clone(), BTreeMap::new()));
        }
        self.endpoints
            .iter()
            .filter(|((_, m), _)| *m == method)
            .find_map(|((template, _), def)| {
                match_template(template, path).map(|p| (def.clone(), p))
            })
    }

    /// Whether some endpoint (with any method) serves `path`: tells 405 from 404.
    pub fn path_exists(&self, path: &str) -> bool {
        self.endpoints
            .keys()
            .any(|(template, _)| template == path || match_template(template, path).is_some())
    }

    pub fn module(&self, name: &str) -> Option<&str> {
        self.modules.get(name).map(String::as_str)
    }

    pub fn modules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.modules.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &str, &EndpointDef)> {
        self.endpoints
            .iter()
            .map(|((p, m), d)| (p.as_str(), m.as_str(), d))
    }
}

/// `/a/./b.js` → `a/b.js`.
pub fn normalize_module_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Resolves an import specifier (`./util.js`, `../lib/x.js`, `/abs.js`)
/// against the importing module's name.
pub fn resolve_specifier(referrer: &str, specifier: &str) -> String {
    if specifier.starts_with('/') {
        return normalize_module_name(specifier);
    }
    let dir = match referrer.rfind('/') {
        Some(i) => &referrer[..i],
        None => "",
    };
    normalize_module_name(&format!("{dir}/{specifier}"))
}

/// Matches `/log/{id}` against `/log/7`.
fn match_template(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    if !template.contains('{') {
        return None;
    }
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            params.insert(name.to_string(), ps.to_string());
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

fn collect_modules(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            collect_modules(root, &path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("js" | "mjs")
        ) {
            let source = std::fs::read_to_string(&path).map_err(io(&path))?;
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(name, source);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(app_json: &str) -> Result<AppBundle, BundleError> {
        let mut modules = BTreeMap::new();
        modules.insert("app.js".to_string(), "export function f() {}".to_string());
        modules.insert("lib/util.js".to_string(), "export const x = 1;".to_string());
        AppBundle::from_parts(app_json, modules)
    }

    #[test]
    fn finds_exact_and_templated_paths() {
        let b = bundle(
            r#"{"endpoints": {
                "/log": {"post": {"js_module": "app.js", "js_function": "f"}},
                "/log/{id}": {"GET": {"js_module": "/app.js", "js_function": "f", "mode": "readonly"}}
            }}"#,
        )
        .unwrap();
        let (def, params) = b.find("POST", "/log").unwrap();
        assert_eq!(def.mode, Mode::Readwrite);
        assert!(params.is_empty());
        let (def, params) = b.find("get", "/log/42").unwrap();
        assert_eq!(def.mode, Mode::Readonly);
        assert_eq!(def.js_module, "app.js");
        assert_eq!(params.get("id").map(String::as_str), Some("42"));
        assert!(b.find("get", "/log").is_none());
        assert!(b.path_exists("/log"));
        assert!(b.find("get", "/log/").is_none());
        assert!(b.find("get", "/log/1/2").is_none());
        assert!(!b.path_exists("/nothing"));
    }

    #[test]
    fn rejects_bad_metadata() {
        assert!(bundle("not json").is_err());
        assert!(bundle(
            r#"{"endpoints": {"/x": {"get": {"js_module": "missing.js", "js_function": "f"}}}}"#
        )
        .is_err());
        assert!(bundle(
            r#"{"endpoints": {"/x": {"fetch": {"js_module": "app.js", "js_function": "f"}}}}"#
        )
        .is_err());
        assert!(bundle(
            r#"{"endpoints": {"x": {"get": {"js_module": "app.js", "js_function": "f"}}}}"#
        )
        .is_err());
        assert!(bundle(r#"{"endpoints": {"/x": {"get": {"js_module": "app.js", "js_function": "f", "mode": "sideways"}}}}"#).is_err());
        let err = bundle(r#"{"endpoints": {"/x": {"get": {"js_module": "app.js", "js_function": "f", "forwarding_required": "maybe"}}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("forwarding_required"), "{err}");
    }

    #[test]
    fn engine_is_chosen_in_app_json() {
        let ep = r#""endpoints": {"/x": {"get": {"js_module": "app.js", "js_function": "f"}}}"#;
        assert_eq!(bundle(&format!("{{{ep}}}")).unwrap().engine(), Engine::V8);
        assert_eq!(
            bundle(&format!(r#"{{"engine": "v8", {ep}}}"#))
                .unwrap()
                .engine(),
            Engine::V8
        );
        assert_eq!(
            bundle(&format!(r#"{{"engine": "quickjs", {ep}}}"#))
                .unwrap()
                .engine(),
            Engine::QuickJs
        );
        for bad in [r#""spidermonkey""#, r#""V8""#, "1", "null"] {
            let err = bundle(&format!(r#"{{"engine": {bad}, {ep}}}"#));
            // `null` reads as "not given".
            if bad == "null" {
                assert_eq!(err.unwrap().engine(), Engine::V8);
                continue;
            }
            let err = err.unwrap_err();
            assert!(matches!(err, BundleError::Metadata { .. }), "{bad}: {err}");
        }
        let err = bundle(&format!(r#"{{"engine": "spidermonkey", {ep}}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown engine"), "{err}");
    }

    #[test]
    fn resolves_relative_imports() {
        assert_eq!(resolve_specifier("app.js", "./lib/util.js"), "lib/util.js");
        assert_eq!(resolve_specifier("lib/util.js", "../app.js"), "app.js");
        assert_eq!(resolve_specifier("lib/util.js", "./x.js"), "lib/x.js");
        assert_eq!(resolve_specifier("lib/util.js", "/app.js"), "app.js");
        assert_eq!(
            resolve_specifier("a.js", "../../../etc/passwd"),
            "etc/passwd"
        );
    }

    #[test]
    fn loads_the_sample_app_from_disk() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/logging");
        let b = AppBundle::load(&dir).unwrap();
        assert!(b.module("logging.js").is_some());
        assert!(b.module("util.js").is_some());
        assert!(b.find("post", "/log/private").is_some());
        assert!(AppBundle::load(Path::new("/nonexistent/app")).is_err());
    }
}
