//! Read-only views of the service for `GET /gov/service/*` (CCF's
//! 2024-07-01 shapes), and the service's genesis.

use charter_ledger::Tx;
use serde_json::{json, Value as Json};

use crate::tables::*;
use crate::GovError;

fn parse(v: &[u8]) -> Json {
    serde_json::from_slice(v).unwrap_or(Json::Null)
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// `GET /gov/service/info`.
pub fn info(tx: &mut Tx) -> Json {
    let info = tx
        .get(SERVICE_INFO, SINGLETON_KEY)
        .map(|v| parse(&v))
        .unwrap_or(Json::Null);
    json!({
        "status": info.get("status"),
        "certificate": info.get("cert"),
    })
}

/// The service status, `Opening` or `Open` (`Opening` if not set yet).
pub fn status(tx: &mut Tx) -> String {
    tx.get(SERVICE_INFO, SINGLETON_KEY)
        .map(|v| parse(&v))
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| SERVICE_OPENING.to_string())
}

/// `GET /gov/service/members`.
pub fn members(tx: &mut Tx) -> Json {
    let infos = tx.entries(MEMBERS_INFO);
    let value: Vec<Json> = tx
        .entries(MEMBERS_CERTS)
        .into_iter()
        .map(|(id, cert)| {
            let info = infos.get(&id).map(|v| parse(v)).unwrap_or(Json::Null);
            let mut m = json!({
                "memberId": text(&id),
                "certificate": text(&cert),
                "status": info.get("status"),
            });
            if let Some(d) = info.get("member_data") {
                m["memberData"] = d.clone();
            }
            m
        })
        .collect();
    json!({ "value": value })
}

/// `GET /gov/service/users`.
pub fn users(tx: &mut Tx) -> Json {
    let infos = tx.entries(USERS_INFO);
    let value: Vec<Json> = tx
        .entries(USERS_CERTS)
        .into_iter()
        .map(|(id, cert)| {
            let mut u = json!({"userId": text(&id), "certificate": text(&cert)});
            if let Some(d) = infos
                .get(&id)
                .map(|v| parse(v))
                .and_then(|i| i.get("user_data").cloned())
            {
                u["userData"] = d;
            }
            u
        })
        .collect();
    json!({ "value": value })
}

/// `GET /gov/service/nodes`.
pub fn nodes(tx: &mut Tx) -> Json {
    let value: Vec<Json> = tx
        .entries(NODES_INFO)
        .into_iter()
        .map(|(id, v)| {
            let info = parse(&v);
            let mut n = json!({
                "nodeId": text(&id),
                "status": info.get("status"),
                "certificate": info.get("cert"),
                "rpcAddress": info.get("rpc_address"),
                "nodeAddress": info.get("node_address"),
            });
            if let Some(d) = info.get("node_data") {
                n["nodeData"] = d.clone();
            }
            n
        })
        .collect();
    json!({ "value": value })
}

/// `GET /gov/service/constitution`: the source text.
pub fn constitution(tx: &mut Tx) -> Option<String> {
    tx.get(CONSTITUTION, SINGLETON_KEY).map(|v| text(&v))
}

/// The governance-installed app: `app.json` text (CCF's metadata shape,
/// plus Charter's `"engine"` if the app chose one) and its modules, or
/// `None` if there is none.
pub fn js_app(tx: &mut Tx) -> Option<(String, std::collections::BTreeMap<String, String>)> {
    let modules: std::collections::BTreeMap<String, String> = tx
        .entries(MODULES)
        .into_iter()
        .map(|(k, v)| (text(&k), text(&v)))
        .collect();
    let endpoints = tx.entries(ENDPOINTS);
    if modules.is_empty() && endpoints.is_empty() {
        return None;
    }
    let mut by_path = serde_json::Map::new();
    for (key, def) in endpoints {
        let key = text(&key);
        let Some((method, path)) = key.split_once(' ') else {
            continue;
        };
        let entry = by_path.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = parse(&def);
    }
    let mut meta = json!({ "endpoints": by_path });
    if let Some(engine) = tx.get(JS_APP_ENGINE, SINGLETON_KEY) {
        meta["engine"] = json!(text(&engine));
    }
    Some((meta.to_string(), modules))
}

/// `GET /gov/service/javascript-app`.
pub fn js_app_view(tx: &mut Tx) -> Json {
    match js_app(tx) {
        Some((meta, modules)) => {
            let meta: Json = serde_json::from_str(&meta).unwrap_or(Json::Null);
            let mut view = json!({
                "endpoints": meta.get("endpoints"),
                "modules": modules.keys().collect::<Vec<_>>(),
            });
            if let Some(engine) = meta.get("engine") {
                view["engine"] = engine.clone();
            }
            view
        }
        None => json!({ "endpoints": {}, "modules": [] }),
    }
}

/// What the first node writes when it creates the service.
pub struct Genesis<'a> {
    pub service_cert_pem: &'a str,
    pub constitution: &'a str,
    /// Certificate PEM and optional member data of each initial member.
    pub members: &'a [(String, Option<Json>)],
    pub users: &'a [String],
    /// `app.json` text and modules of an app to install, if any.
    pub app: Option<(String, std::collections::BTreeMap<String, String>)>,
}

fn set(tx: &mut Tx, map: &str, key: &[u8], value: &[u8]) -> Result<(), GovError> {
    tx.set(map, key, value)
        .map_err(|e| GovError::internal(e.to_string()))
}

/// Writes the genesis tables: the service (Opening), the constitution,
/// initial members (Accepted: each becomes Active by acking), users and
/// the app.
pub fn genesis(tx: &mut Tx, g: &Genesis) -> Result<(), GovError> {
    let info = json!({"status": SERVICE_OPENING, "cert": g.service_cert_pem});
    set(tx, SERVICE_INFO, SINGLETON_KEY, info.to_string().as_bytes())?;
    set(tx, CONSTITUTION, SINGLETON_KEY, g.constitution.as_bytes())?;
    for (pem, data) in g.members {
        let id = crate::cert_id_pem(pem).map_err(GovError::internal)?;
        set(tx, MEMBERS_CERTS, id.as_bytes(), pem.as_bytes())?;
        let mut info = json!({"status": MEMBER_ACCEPTED});
        if let Some(d) = data {
            info["member_data"] = d.clone();
        }
        set(tx, MEMBERS_INFO, id.as_bytes(), info.to_string().as_bytes())?;
    }
    for pem in g.users {
        let id = crate::cert_id_pem(pem).map_err(GovError::internal)?;
        set(tx, USERS_CERTS, id.as_bytes(), pem.as_bytes())?;
    }
    if let Some((meta, modules)) = &g.app {
        install_app(tx, meta, modules)?;
    }
    Ok(())
}

/// Writes an app into the modules and endpoints tables (what the default
/// constitution's `set_js_app` does).
pub fn install_app(
    tx: &mut Tx,
    app_json: &str,
    modules: &std::collections::BTreeMap<String, String>,
) -> Result<(), GovError> {
    let meta: Json = serde_json::from_str(app_json)
        .map_err(|e| GovError::bad_request("InvalidApp", format!("app.json: {e}")))?;
    let endpoints = meta
        .get("endpoints")
        .and_then(|e| e.as_object())
        .ok_or_else(|| GovError::bad_request("InvalidApp", "app.json has no endpoints object"))?;
    let engine = match meta.get("engine") {
        None => None,
        Some(Json::String(e)) if e == "v8" || e == "quickjs" => Some(e.as_str()),
        Some(other) => {
            return Err(GovError::bad_request(
                "InvalidApp",
                format!("app.json: engine must be \"v8\" or \"quickjs\", not {other}"),
            ))
        }
    };
    for map in [MODULES, ENDPOINTS, JS_APP_ENGINE] {
        tx.clear(map)
            .map_err(|e| GovError::internal(e.to_string()))?;
    }
    if let Some(engine) = engine {
        set(tx, JS_APP_ENGINE, SINGLETON_KEY, engine.as_bytes())?;
    }
    for (name, source) in modules {
        set(tx, MODULES, name.as_bytes(), source.as_bytes())?;
    }
    for (path, methods) in endpoints {
        let Some(methods) = methods.as_object() else {
            continue;
        };
        for (method, def) in methods {
            let key = format!("{} {path}", method.to_ascii_lowercase());
            set(tx, ENDPOINTS, key.as_bytes(), def.to_string().as_bytes())?;
        }
    }
    Ok(())
}
