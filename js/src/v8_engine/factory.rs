//! An ES module rewritten as a function that makes a fresh instance of the
//! module each time it is called: the V8 fast path for fresh module state.
//!
//! Why: V8 keeps what it learns about a function (its feedback, and the
//! optimised code built from it) in a cell owned by the closure's creator.
//! A module evaluated anew for every request is a new top-level function
//! each time, so every request starts cold, in the interpreter. A module
//! *factory* compiled once per realm is one function: the closures each
//! call creates share their creator's cells, so the second request already
//! runs optimised code, while module state (top-level `let`s, closures,
//! objects) is still made afresh by every call.
//!
//! The rewrite understands the module forms apps use and gives up on the
//! rest, in which case the engine evaluates real modules as before:
//!
//! - `import "m"`, `import d from "m"`, `import * as ns from "m"`,
//!   `import { a, b as c } from "m"` and combinations: bindings made at the
//!   top of the factory from the dependency's namespace object;
//! - `export function|async function|function*|class|const NAME`,
//!   `export default ...`, `export { a, b as c }`,
//!   `export { a as b } from "m"`.
//!
//! Given up on (real modules are used): a module graph in which a module
//! imports another's `export let`/`export var` (it would get a copy, not a
//! live binding: the engine checks), `export *`, destructured
//! `export const`, import attributes, `import.meta`,
//! top-level `await` (the factory does not compile), and anything the
//! scanner cannot follow. The engine also checks the rewrite against V8's
//! own reading of the module (its imports and its exported names) before
//! using it.
//!
//! Line numbers in stack traces stay those of the module: the factory's
//! header is one line of its own that the script origin offsets away.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A module rewritten as a factory script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Factory {
    /// A script whose value is the factory function. The function takes an
    /// array of the dependencies' namespace objects, in the order of
    /// `dependencies`, and returns this module's namespace object.
    pub(crate) script: String,
    /// Import specifiers as written, each once, in the order the module
    /// requests them (which is the order they are evaluated in).
    pub(crate) dependencies: Vec<String>,
    /// What the module imports from each dependency, by dependency index:
    /// names that must be exported there ("default" for a default import).
    pub(crate) imported_names: Vec<(usize, String)>,
    /// Exported names, sorted.
    pub(crate) exports: Vec<String>,
    /// Exported `let` and `var` bindings: an importer gets a copy of them
    /// taken when this module has run, not a live binding, so the engine
    /// refuses a graph in which another module imports one (by name or
    /// through a namespace).
    pub(crate) mutable_exports: Vec<String>,
    /// Dependencies (by index) imported whole, as `import * as ns`.
    pub(crate) namespace_imports: Vec<usize>,
    /// The module with `import "__charter_probe_N";` put where each edit
    /// of the rewrite is (see [`PROBE`]). Compiled by V8 as a module, it
    /// requests every probe only if every edit is at the start of a
    /// statement of the module's top level: not in a string, template,
    /// regex or comment the scanner misread, not inside an expression.
    pub(crate) probe: String,
    /// How many probes `probe` holds.
    pub(crate) probes: usize,
}

/// The specifier of the probe put at each edit, followed by its number.
pub(crate) const PROBE: &str = "__charter_probe_";

/// The binding an anonymous default export is assigned to (a function's
/// name is then put back to "default").
const DEFAULT_BINDING: &str = "__charter_d";
/// What replaces `export default` before an anonymous default export: as
/// long as it, so that columns hold; the `;` ends the statement before, as
/// the line break before `export` did.
const DEFAULT_ASSIGNMENT: &str = ";__charter_d= ";
const DEPS: &str = "__charter_deps";

/// Rewrites `source`, or says why it cannot (the module is then run as a
/// real module).
pub(crate) fn rewrite(source: &str) -> Result<Factory, String> {
    let tokens = tokenize(source)?;
    let mut edits: Vec<Edit> = Vec::new();
    let mut dependencies: Vec<String> = Vec::new();
    let mut imported_names = Vec::new();
    // Header statements making import bindings, in source order.
    let mut header = String::new();
    // exported name → expression for its value
    let mut exports: BTreeMap<String, String> = BTreeMap::new();
    // Whether `export default` is an assignment to `DEFAULT_BINDING`, and
    // whether what it assigns is a function named by that assignment,
    // whose name is then put back to "default".
    let mut default_is_anonymous = false;
    let mut rename_default = false;
    let mut reexports = 0usize;
    // Top-level `function`, `class`, `const`, `let` and `var` names, and
    // whether they are `let` or `var`.
    let mut declared: HashMap<&str, bool> = HashMap::new();
    let mut mutable_exports: Vec<String> = Vec::new();
    let mut namespace_imports: Vec<usize> = Vec::new();
    // `export { local as exported }` pairs, checked against `declared`.
    let mut local_exports: HashSet<String> = HashSet::new();
    let mut dependency_index: HashMap<String, usize> = HashMap::new();

    let mut dep_index = |deps: &mut Vec<String>, spec: String| -> usize {
        *dependency_index.entry(spec.clone()).or_insert_with(|| {
            deps.push(spec);
            deps.len() - 1
        })
    };

    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let text = t.text(source);
        // The factory's own bindings start with `__charter`: a module
        // naming one could shadow or reach them.
        if t.kind == Kind::Name && text.starts_with("__charter") {
            return Err(format!(
                "`{text}`: names starting with `__charter` are the rewrite's"
            ));
        }
        let after_dot = is_property(source, &tokens, i);
        // A direct `eval(...)` and `arguments` would reach the factory's
        // own bindings and arguments, which a module does not have. (An
        // indirect eval, `(0, eval)(...)`, runs in the global scope.)
        let follower = tokens.get(i + 1).map(|n| n.text(source));
        let before = (i > 0).then(|| tokens[i - 1].text(source));
        let direct_eval = text == "eval"
            && (matches!(follower, Some("(" | "?."))
                || (before == Some("(") && follower == Some(")")));
        // Only an object's key (`{ arguments: 1 }`) is let through.
        let arguments =
            text == "arguments" && !(follower == Some(":") && matches!(before, Some("{" | ",")));
        if t.kind == Kind::Name && !after_dot && (direct_eval || arguments) {
            return Err(format!("`{text}` in a module"));
        }
        // An escaped or non-ASCII name could be any of the names checked
        // here (`\u0065val`), and a non-ASCII space would be read as part
        // of a name.
        if t.kind == Kind::Name && text.bytes().any(|c| c == b'\\' || c >= 0x80) {
            return Err(format!("`{text}`: an escaped or non-ASCII name"));
        }
        // `{ import: 1 }`, `static export() {}`, `export = 1` in a class
        // body: names, not module syntax.
        let keyword = t.kind == Kind::Name
            && (text == "import" || text == "export")
            && !matches!(follower, Some(":" | "="))
            && !(text == "export" && follower == Some("("));
        let statement_start =
            i == 0 || t.newline_before || matches!(tokens[i - 1].text(source), ";" | "}");
        if t.depth == 0 && statement_start && t.kind == Kind::Name {
            if let Some((name, mutable)) = declared_name(source, &tokens[i..]) {
                declared.entry(name).or_insert(mutable);
            }
        }
        // `import(...)` is left as it is: V8 refuses it the same way in a
        // script as in a module (the node gives it no loader).
        let dynamic_import =
            text == "import" && tokens.get(i + 1).is_some_and(|n| n.text(source) == "(");
        if !keyword || after_dot || dynamic_import {
            i += 1;
            continue;
        }
        if t.depth != 0 {
            return Err(format!("`{text}` inside a block or expression"));
        }
        if !statement_start {
            return Err(format!("`{text}` in the middle of a statement"));
        }
        let mut p = Parser {
            source,
            tokens: &tokens,
            at: i + 1,
        };
        if text == "import" {
            let import = p.import()?;
            let k = dep_index(&mut dependencies, import.specifier);
            if let Some(name) = import.default {
                header.push_str(&format!("const {name} = {DEPS}[{k}][\"default\"]; "));
                imported_names.push((k, "default".to_string()));
            }
            if let Some(name) = import.namespace {
                header.push_str(&format!("const {name} = {DEPS}[{k}]; "));
                namespace_imports.push(k);
            }
            for (imported, local) in import.named {
                header.push_str(&format!(
                    "const {local} = {DEPS}[{k}][{}]; ",
                    quote(&imported)
                ));
                imported_names.push((k, imported));
            }
            edits.push(Edit::blank(t.start, p.statement_end()));
            i = p.at;
            continue;
        }
        // export
        let next = p.peek().ok_or("`export` at the end of the module")?;
        match next {
            "default" => {
                p.at += 1;
                let default_end = tokens[p.at - 1].end;
                let mut q = p;
                let is_async = q.peek() == Some("async")
                    && q.peek_at(1) == Some("function")
                    && !tokens[q.at + 1].newline_before;
                if is_async {
                    q.at += 1;
                }
                match q.peek() {
                    Some("function") | Some("class") => {
                        let is_class = q.peek() == Some("class");
                        q.at += 1;
                        if !is_class && q.peek() == Some("*") {
                            q.at += 1;
                        }
                        let name = q.peek_name().filter(|n| !is_class || *n != "extends");
                        match name {
                            Some(name) => {
                                exports.insert("default".into(), name.to_string());
                                edits.push(Edit::blank(t.start, default_end));
                            }
                            None if is_class => {
                                // Its static initialisers could see a
                                // name other than "default".
                                return Err("an anonymous `export default class`".into());
                            }
                            None => {
                                // An anonymous function declaration becomes
                                // a function expression assigned to the
                                // default binding, ended by a `;` after its
                                // body. (It is no longer hoisted, which
                                // only an import cycle could see.)
                                let body_end = function_body_end(&tokens, q.at)
                                    .ok_or("an `export default function` without a body")?;
                                edits.push(default_assignment(source, t.start, default_end));
                                edits.push(Edit::insert(tokens[body_end].end, ";".into()));
                                exports.insert("default".into(), DEFAULT_BINDING.into());
                                default_is_anonymous = true;
                                rename_default = true;
                            }
                        }
                    }
                    _ => {
                        match default_expression(source, &tokens, q.at) {
                            DefaultExpression::AnonymousClass => {
                                return Err("an anonymous class as `export default`".into())
                            }
                            DefaultExpression::Function => rename_default = true,
                            DefaultExpression::Other => {}
                        }
                        edits.push(default_assignment(source, t.start, default_end));
                        exports.insert("default".into(), DEFAULT_BINDING.into());
                        default_is_anonymous = true;
                    }
                }
                i = p.at;
            }
            "function" | "async" | "class" | "const" | "let" | "var" => {
                p.at += 1;
                if next == "async" {
                    if p.peek() != Some("function") {
                        return Err("`export async` that is not a function".into());
                    }
                    p.at += 1;
                }
                let mutable = next == "let" || next == "var";
                if matches!(next, "function" | "async") && p.peek() == Some("*") {
                    p.at += 1;
                }
                let name = p
                    .peek_name()
                    .ok_or_else(|| format!("`export {next}` without a plain name"))?;
                exports.insert(name.to_string(), name.to_string());
                if mutable {
                    mutable_exports.push(name.to_string());
                }
                declared.entry(name).or_insert(mutable);
                edits.push(Edit::blank(t.start, t.end));
                i = p.at;
            }
            "{" => {
                p.at += 1;
                let names = p.specifiers()?;
                let from = if p.peek() == Some("from") {
                    p.at += 1;
                    Some(p.string()?)
                } else {
                    None
                };
                match from {
                    None => {
                        for (local, exported) in names {
                            if !is_plain_name(&local) {
                                return Err(format!("`export {{ {local} }}` without `from`"));
                            }
                            local_exports.insert(local.clone());
                            exports.insert(exported, local);
                        }
                    }
                    Some(spec) => {
                        let k = dep_index(&mut dependencies, spec);
                        let binding = format!("__charter_reexport{reexports}");
                        reexports += 1;
                        header.push_str(&format!("const {binding} = {DEPS}[{k}]; "));
                        for (imported, exported) in names {
                            exports.insert(exported, format!("{binding}[{}]", quote(&imported)));
                            imported_names.push((k, imported));
                        }
                    }
                }
                p.no_attributes()?;
                edits.push(Edit::blank(t.start, p.statement_end()));
                i = p.at;
            }
            other => return Err(format!("`export {other}` is not supported by the rewrite")),
        }
    }

    for (exported, local) in &exports {
        if !local_exports.contains(local) {
            continue;
        }
        match declared.get(local.as_str()) {
            Some(true) => mutable_exports.push(exported.clone()),
            Some(false) => {}
            None => {
                return Err(format!(
                    "`export {{ {local} }}`: not declared at the top level of this module"
                ))
            }
        }
    }
    // A function or class declaration is a binding its module may assign
    // to later (`f = other`), which a real module's importers would see; a
    // copy would not.
    let locals: HashSet<&str> = exports
        .values()
        .map(String::as_str)
        .filter(|local| is_plain_name(local))
        .collect();
    let assigned = assigned_to(source, &tokens, &locals);
    for (exported, local) in &exports {
        if assigned.contains(local.as_str()) {
            mutable_exports.push(exported.clone());
        }
    }
    mutable_exports.sort();
    mutable_exports.dedup();

    // The body, with the module syntax taken out, and the probe.
    let mut body = String::with_capacity(source.len() + 64);
    let mut probe = String::with_capacity(source.len() + 32 * edits.len());
    let mut at = 0;
    edits.sort_by_key(|e| e.start);
    for (n, e) in edits.iter().enumerate() {
        if e.start < at {
            return Err("overlapping rewrites".into());
        }
        probe.push_str(&source[at..e.start]);
        probe.push_str(&format!("import \"{PROBE}{n}\";"));
        probe.push_str(&source[e.start..e.end]);
        body.push_str(&source[at..e.start]);
        if e.text.is_empty() {
            blank_into(&mut body, &source[e.start..e.end]);
        } else {
            body.push_str(&e.text);
        }
        at = e.end;
    }
    body.push_str(&source[at..]);
    probe.push_str(&source[at..]);
    if body.starts_with("#!") {
        let end = body
            .find(['\n', '\r', '\u{2028}', '\u{2029}'])
            .unwrap_or(body.len());
        body.replace_range(..end, &" ".repeat(end));
    }

    // The namespace object: the exports' values once the body has run,
    // sorted as a module namespace's keys are, on a frozen null-prototype
    // object tagged "Module".
    let mut namespace = String::from("__charter_define({ __proto__: null, ");
    for (name, value) in &exports {
        // A computed key, so that an export named `__proto__` is a key.
        namespace.push_str(&format!("[{}]: {value}, ", quote(name)));
    }
    namespace.push_str("}, __charter_tag, { value: \"Module\" })");
    if default_is_anonymous {
        header.push_str(&format!("let {DEFAULT_BINDING}; "));
    }
    let rename = if rename_default {
        format!(
            "if ((typeof {DEFAULT_BINDING} === \"function\") && {DEFAULT_BINDING}.name === \"{DEFAULT_BINDING}\") \
             __charter_define({DEFAULT_BINDING}, \"name\", {{ value: \"default\", configurable: true }}); "
        )
    } else {
        String::new()
    };
    // One header line (the script origin's line offset of -1 hides it),
    // then the module's own lines.
    let script = format!(
        "(function () {{ \"use strict\"; \
         const __charter_freeze = Object.freeze, __charter_define = Object.defineProperty, \
         __charter_tag = Symbol.toStringTag; \
         return function ({DEPS}) {{ {header}\n\
         {body}\n\
         ;{rename}return __charter_freeze({namespace}); }}; }})()"
    );
    Ok(Factory {
        script,
        dependencies,
        imported_names,
        exports: exports.into_keys().collect(),
        mutable_exports,
        namespace_imports,
        probe,
        probes: edits.len(),
    })
}

/// Blanks `text` out into `out`: a `;` for its first character (the
/// statement before it ends there, as it did before `import`/`export`),
/// then spaces, as many UTF-16 units as V8 counts in columns, and every
/// line break kept, so that line and column numbers hold.
fn blank_into(out: &mut String, text: &str) {
    for (n, c) in text.chars().enumerate() {
        match c {
            '\n' | '\r' | '\u{2028}' | '\u{2029}' => out.push(c),
            _ if n == 0 => {
                out.push(';');
                out.extend(std::iter::repeat_n(' ', c.len_utf16() - 1));
            }
            _ => out.extend(std::iter::repeat_n(' ', c.len_utf16())),
        }
    }
}

/// The edit turning `export default` (from `start` to `end`) into an
/// assignment to the default binding, in the same columns when it is
/// written `export default`.
fn default_assignment(source: &str, start: usize, end: usize) -> Edit {
    let span = &source[start..end];
    let assignment = DEFAULT_ASSIGNMENT.trim_end();
    let mut blank = String::new();
    blank_into(&mut blank, span);
    // `blank` is a `;`, spaces and the span's line breaks: the assignment
    // takes the place of its first characters if they are on one line.
    let text = match blank.get(..assignment.len()) {
        Some(head) if !head.contains(['\n', '\r', '\u{2028}', '\u{2029}']) => {
            format!("{assignment}{}", &blank[assignment.len()..])
        }
        _ => format!("{assignment}{}", &blank[1..]),
    };
    Edit { start, end, text }
}

/// What follows `export default` when it is an expression.
enum DefaultExpression {
    /// A function or arrow, which the assignment names: its name is put
    /// back to "default" (a name is read only from these, so that no
    /// getter or proxy trap of another value runs).
    Function,
    /// `class {}`, `(class {})`: its static initialisers would see the
    /// assignment's name.
    AnonymousClass,
    Other,
}

fn default_expression(source: &str, tokens: &[Token], mut k: usize) -> DefaultExpression {
    let text = |n: usize| tokens.get(n).map(|t| t.text(source));
    // Through any parentheses around it (a loop: they may be deep).
    loop {
        return match text(k) {
            Some("function" | "async") => DefaultExpression::Function,
            Some("class") if matches!(text(k + 1), Some("{" | "extends")) => {
                DefaultExpression::AnonymousClass
            }
            Some("(") => match tokens[k].pair {
                Some(close) if text(close + 1) == Some("=>") => DefaultExpression::Function,
                Some(_) => {
                    k += 1;
                    continue;
                }
                None => DefaultExpression::Other,
            },
            Some(_) if tokens[k].kind == Kind::Name && text(k + 1) == Some("=>") => {
                DefaultExpression::Function
            }
            _ => DefaultExpression::Other,
        };
    }
}

/// The index of the `}` ending the body of the function whose parameter
/// list opens at `tokens[open]`.
fn function_body_end(tokens: &[Token], open: usize) -> Option<usize> {
    let close = tokens.get(open)?.pair?;
    if close < open {
        return None;
    }
    let body = tokens.get(close + 1)?;
    let end = body.pair?;
    (end > close + 1).then_some(end)
}

/// A JS string literal for `s`.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Edit {
    start: usize,
    end: usize,
    /// Empty: blank the span out.
    text: String,
}

impl Edit {
    fn blank(start: usize, end: usize) -> Edit {
        Edit {
            start,
            end,
            text: String::new(),
        }
    }

    fn insert(at: usize, text: String) -> Edit {
        Edit {
            start: at,
            end: at,
            text,
        }
    }
}

struct Import {
    specifier: String,
    default: Option<String>,
    namespace: Option<String>,
    /// (imported, local)
    named: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
struct Parser<'a> {
    source: &'a str,
    tokens: &'a [Token],
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Option<&'a str> {
        self.tokens.get(self.at + n).map(|t| t.text(self.source))
    }

    fn peek_name(&self) -> Option<&'a str> {
        let t = self.tokens.get(self.at)?;
        (t.kind == Kind::Name && is_plain_name(t.text(self.source))).then(|| t.text(self.source))
    }

    fn expect(&mut self, what: &str) -> Result<(), String> {
        if self.peek() == Some(what) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected `{what}`"))
        }
    }

    /// A plain identifier (no escapes, no non-ASCII), taken.
    fn name(&mut self) -> Result<String, String> {
        let name = self.peek_name().ok_or("expected a name")?;
        self.at += 1;
        Ok(name.to_string())
    }

    /// A string literal without escapes, taken, unquoted.
    fn string(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.at).ok_or("expected a string")?;
        let text = t.text(self.source);
        if t.kind != Kind::Str || text.contains('\\') {
            return Err("expected a plain string".into());
        }
        self.at += 1;
        Ok(text[1..text.len() - 1].to_string())
    }

    /// An identifier name (reserved words too: `default`), taken.
    fn any_name(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.at).ok_or("expected a name")?;
        let text = t.text(self.source);
        if t.kind != Kind::Name || !is_plain_name_or_reserved(text) {
            return Err("expected a name".into());
        }
        self.at += 1;
        Ok(text.to_string())
    }

    /// `a, b as c, }`: pairs (name, alias), after the `{`. Either may be a
    /// reserved word here; the caller checks the one it binds.
    fn specifiers(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut names = Vec::new();
        loop {
            if self.peek() == Some("}") {
                self.at += 1;
                return Ok(names);
            }
            let name = self.any_name()?;
            let alias = if self.peek() == Some("as") {
                self.at += 1;
                self.any_name()?
            } else {
                name.clone()
            };
            names.push((name, alias));
            match self.peek() {
                Some(",") => self.at += 1,
                Some("}") => {}
                _ => return Err("malformed `{ ... }` list".into()),
            }
        }
    }

    /// After `import`.
    fn import(&mut self) -> Result<Import, String> {
        let mut import = Import {
            specifier: String::new(),
            default: None,
            namespace: None,
            named: Vec::new(),
        };
        match self.peek() {
            Some("(") | Some(".") => return Err("dynamic import() or import.meta".into()),
            Some(s) if s.starts_with('"') || s.starts_with('\'') => {
                import.specifier = self.string()?;
                self.no_attributes()?;
                return Ok(import);
            }
            _ => {}
        }
        if self.peek_name().is_some() {
            import.default = Some(self.name()?);
            if self.peek() == Some(",") {
                self.at += 1;
            } else {
                self.expect("from")?;
                import.specifier = self.string()?;
                self.no_attributes()?;
                return Ok(import);
            }
        }
        match self.peek() {
            Some("*") => {
                self.at += 1;
                self.expect("as")?;
                import.namespace = Some(self.name()?);
            }
            Some("{") => {
                self.at += 1;
                import.named = self.specifiers()?;
                if let Some((_, local)) = import.named.iter().find(|(_, l)| !is_plain_name(l)) {
                    return Err(format!("cannot bind `{local}`"));
                }
            }
            _ => return Err("malformed import".into()),
        }
        self.expect("from")?;
        import.specifier = self.string()?;
        self.no_attributes()?;
        Ok(import)
    }

    /// Import attributes (`with { type: "json" }`) are not rewritten.
    fn no_attributes(&self) -> Result<(), String> {
        match self.tokens.get(self.at) {
            Some(t) if !t.newline_before && matches!(t.text(self.source), "with" | "assert") => {
                Err("import attributes".into())
            }
            _ => Ok(()),
        }
    }

    /// Where the statement just read ends: past its `;` if it has one
    /// (which is then taken).
    fn statement_end(&mut self) -> usize {
        if self.peek() == Some(";") {
            self.at += 1;
        }
        self.tokens[self.at - 1].end
    }
}

/// A name the rewrite can bind as is: ASCII, no escapes, not reserved.
fn is_plain_name(s: &str) -> bool {
    is_plain_name_or_reserved(s) && !RESERVED.contains(&s)
}

fn is_plain_name_or_reserved(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// The name a top-level statement starting at `tokens[0]` declares, if it
/// is `function NAME`, `async function NAME`, `function* NAME`,
/// `class NAME`, `const NAME`, `let NAME` or `var NAME`, and whether it is
/// a `let` or `var` (a binding that may be reassigned).
fn declared_name<'s>(source: &'s str, tokens: &[Token]) -> Option<(&'s str, bool)> {
    let text = |n: usize| tokens.get(n).map(|t| t.text(source));
    let mut n = 0;
    if text(0) == Some("async") && text(1) == Some("function") {
        n = 1;
    }
    match text(n)? {
        "function" => {
            n += 1;
            if text(n) == Some("*") {
                n += 1;
            }
        }
        "class" | "const" | "let" | "var" => n += 1,
        _ => return None,
    }
    let mutable = matches!(text(n - 1), Some("let" | "var"));
    text(n)
        .filter(|name| is_plain_name(name))
        .map(|name| (name, mutable))
}

/// Which of `names` the module assigns to anywhere other than where they
/// are declared: `name = `, `name += `, `name++`, `--name`,
/// `for (name of ...)`, `(name) = `, and as the target of a destructuring
/// assignment (`[name] = ...`, `({ name } = ...)`, `[(name)] = ...`), in
/// any scope. A local that shadows one counts too, as may a few reads
/// inside patterns, which only costs the fast path. One pass.
fn assigned_to<'n>(source: &str, tokens: &[Token], names: &HashSet<&'n str>) -> HashSet<&'n str> {
    let text = |n: usize| tokens.get(n).map(|t| t.text(source));
    let adjacent = |a: usize, b: usize| tokens[a].end == tokens[b].start;
    // An `=` (not `==`) or an operator glued to one (`+=`, `>>>=`, `??=`)
    // at `j`. `<=` and `>=` read as assignments too, harmlessly.
    let assignment_at = |j: usize| {
        let mut k = j;
        while k < tokens.len()
            && k < j + 3
            && tokens[k].kind == Kind::Punct
            && matches!(
                text(k),
                Some("+" | "-" | "*" | "/" | "%" | "<" | ">" | "&" | "|" | "^" | "?")
            )
            && (k == j || adjacent(k - 1, k))
        {
            k += 1;
        }
        text(k) == Some("=") && (k == j || adjacent(k - 1, k)) && text(k + 1) != Some("=")
    };
    // The open brackets around the current token, innermost last, each
    // with whether it is (or is inside) an assignment target: an array or
    // object pattern followed by `=`, `of` or `in` and not declared by
    // `const`/`let`/`var`, or parentheses assigned to or updated.
    let mut enclosing: Vec<bool> = Vec::new();
    let mut assigned = HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let here = text(i);
        if t.kind == Kind::Punct && matches!(here, Some(")" | "]" | "}")) {
            enclosing.pop();
            continue;
        }
        if t.kind == Kind::Punct && matches!(here, Some("(" | "[" | "{")) {
            let inside_target = enclosing.last().copied().unwrap_or(false);
            let after = t.pair.map(|close| close + 1);
            let target = if here == Some("(") {
                after.is_some_and(|a| assignment_at(a) || matches!(text(a), Some("++" | "--")))
                    || (i > 0 && matches!(text(i - 1), Some("++" | "--")))
            } else {
                let declared = i > 0 && matches!(text(i - 1), Some("const" | "let" | "var"));
                !declared
                    && after
                        .is_some_and(|a| assignment_at(a) || matches!(text(a), Some("of" | "in")))
            };
            enclosing.push(target || inside_target);
            continue;
        }
        let Some(name) = here.and_then(|n| names.get(n)) else {
            continue;
        };
        if t.kind != Kind::Name || assigned.contains(name) {
            continue;
        }
        // A property, or the declaration itself (`const name = ...`).
        if i > 0 && matches!(text(i - 1), Some("." | "?." | "const" | "let" | "var")) {
            continue;
        }
        let updated = (i > 0 && matches!(text(i - 1), Some("++" | "--")))
            || matches!(text(i + 1), Some("++" | "--"))
            || assignment_at(i + 1);
        let for_target = i >= 2
            && text(i - 1) == Some("(")
            && matches!(text(i - 2), Some("for" | "await"))
            && matches!(text(i + 1), Some("of" | "in"));
        // In a target, as an element or a value, not a key (`{ name: x }`).
        let in_target = enclosing.last().copied().unwrap_or(false)
            && i > 0
            && matches!(text(i - 1), Some("[" | "{" | "(" | "," | "..." | ":"))
            && matches!(text(i + 1), Some("," | "]" | "}" | ")" | "="));
        if updated || for_target || in_target {
            assigned.insert(*name);
        }
    }
    assigned
}

const RESERVED: &[&str] = &[
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "eval",
    "arguments",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Name,
    Str,
    /// A template literal's piece: from its start (or a `}` ending a
    /// substitution) to its end (or a `${`).
    Template,
    Regex,
    Number,
    Punct,
}

/// What a `/` right after a closing bracket is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SlashAfter {
    Divides,
    StartsRegex,
    /// The scanner cannot tell (a `}` whose `{` came after a `:`, which
    /// opens an object or a block): it gives up on the module.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Brackets (and template substitutions) open around the token.
    depth: usize,
    /// A line break between this token and the one before.
    newline_before: bool,
    /// For a bracket, the index of its partner (set on both).
    pair: Option<usize>,
    /// For a closing `)` or `}`: what a `/` after it is.
    slash_after: SlashAfter,
}

impl Token {
    fn text<'s>(&self, source: &'s str) -> &'s str {
        &source[self.start..self.end]
    }
}

/// Words after which a `/` starts a regular expression.
const BEFORE_EXPRESSION: &[&str] = &[
    "return",
    "typeof",
    "instanceof",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "case",
    "do",
    "else",
    "yield",
    "await",
    "default",
];

/// An opening bracket not yet closed.
struct Open {
    /// b'{', b'(', b'[', or b'`' for a template substitution.
    bracket: u8,
    /// Its token's index (none for a template substitution).
    token: Option<usize>,
    /// What a `/` after its closing bracket is.
    slash_after: SlashAfter,
}

/// U+2028 and U+2029, line terminators in JavaScript.
fn line_separator_at(b: &[u8], i: usize) -> bool {
    b.get(i) == Some(&0xE2)
        && b.get(i + 1) == Some(&0x80)
        && matches!(b.get(i + 2), Some(0xA8 | 0xA9))
}

/// Splits `source` into the tokens the rewrite needs to see (comments and
/// white space dropped). Fails on anything it cannot follow.
fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let b = source.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut newline = false;
    let mut i = 0;
    if b.starts_with(b"#!") {
        while i < b.len() && b[i] != b'\n' && b[i] != b'\r' && !line_separator_at(b, i) {
            i += 1;
        }
    }
    let push = |tokens: &mut Vec<Token>, kind, start, end, depth, newline: &mut bool| {
        tokens.push(Token {
            kind,
            start,
            end,
            depth,
            newline_before: *newline,
            pair: None,
            slash_after: SlashAfter::Divides,
        });
        *newline = false;
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'\n' | b'\r' => {
                newline = true;
                i += 1;
            }
            _ if line_separator_at(b, i) => {
                newline = true;
                i += 3;
            }
            b' ' | b'\t' | 0x0b | 0x0c => i += 1,
            b'/' if next == Some(b'/') => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' && !line_separator_at(b, i) {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let end = source[i + 2..].find("*/").ok_or("unterminated comment")? + i + 4;
                if source[i..end].contains(['\n', '\r', '\u{2028}', '\u{2029}']) {
                    newline = true;
                }
                i = end;
            }
            b'\'' | b'"' => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') | Some(b'\r') => {
                            return Err("unterminated string".into())
                        }
                        Some(b'\\') => i += 2,
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                push(&mut tokens, Kind::Str, start, i, open.len(), &mut newline);
            }
            // A template's start, or the `}` ending one of its
            // substitutions: both go on to the next piece of text.
            _ if c == b'`' || (c == b'}' && open.last().is_some_and(|o| o.bracket == b'`')) => {
                if c == b'}' {
                    open.pop();
                }
                let start = i;
                i = template_piece(b, i + 1, &mut open)?;
                push(
                    &mut tokens,
                    Kind::Template,
                    start,
                    i,
                    open.len(),
                    &mut newline,
                );
            }
            b'{' | b'(' | b'[' => {
                let slash_after = match c {
                    b'(' => slash_after_parenthesis(source, &tokens),
                    b'{' => slash_after_brace(source, tokens.last()),
                    _ => SlashAfter::Divides,
                };
                push(&mut tokens, Kind::Punct, i, i + 1, open.len(), &mut newline);
                open.push(Open {
                    bracket: c,
                    token: Some(tokens.len() - 1),
                    slash_after,
                });
                i += 1;
            }
            b'}' | b')' | b']' => {
                let opener = match c {
                    b'}' => b'{',
                    b')' => b'(',
                    _ => b'[',
                };
                let Some(o) = open.pop().filter(|o| o.bracket == opener) else {
                    return Err("unbalanced brackets".into());
                };
                push(&mut tokens, Kind::Punct, i, i + 1, open.len(), &mut newline);
                let here = tokens.len() - 1;
                tokens[here].slash_after = o.slash_after;
                if let Some(t) = o.token {
                    tokens[here].pair = Some(t);
                    tokens[t].pair = Some(here);
                }
                i += 1;
            }
            b'/' => {
                match regex_allowed(source, &tokens) {
                    SlashAfter::Divides => {
                        push(&mut tokens, Kind::Punct, i, i + 1, open.len(), &mut newline);
                        i += 1;
                        continue;
                    }
                    SlashAfter::Unknown => {
                        return Err("cannot tell a regex from a division after `}`".into())
                    }
                    SlashAfter::StartsRegex => {}
                }
                let start = i;
                i += 1;
                let mut class = false;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') | Some(b'\r') => return Err("unterminated regex".into()),
                        Some(b'\\') => i += 2,
                        Some(b'[') => {
                            class = true;
                            i += 1
                        }
                        Some(b']') => {
                            class = false;
                            i += 1
                        }
                        Some(b'/') if !class => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                while i < b.len() && is_name_byte(b[i]) {
                    i += 1;
                }
                push(&mut tokens, Kind::Regex, start, i, open.len(), &mut newline);
            }
            // A number: `12`, `0x1F`, `1e+3`, `.5`, `1_000n`.
            _ if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (is_name_byte(b[i])
                        || b[i] == b'.'
                        || ((b[i] == b'+' || b[i] == b'-')
                            && matches!(b[i - 1], b'e' | b'E')
                            && !source[start..i].starts_with("0x")
                            && !source[start..i].starts_with("0X")))
                {
                    i += 1;
                }
                push(
                    &mut tokens,
                    Kind::Number,
                    start,
                    i,
                    open.len(),
                    &mut newline,
                );
            }
            _ if is_name_byte(c) || c == b'#' => {
                let start = i;
                i += 1;
                while i < b.len() && is_name_byte(b[i]) && !line_separator_at(b, i) {
                    i += 1;
                }
                push(&mut tokens, Kind::Name, start, i, open.len(), &mut newline);
            }
            _ => {
                let start = i;
                let rest = &source[i..];
                let len = ["...", "++", "--", "=>", "?."]
                    .iter()
                    .find(|p| rest.starts_with(**p))
                    .map_or(1, |p| p.len());
                // A lone byte of a multi-byte character is not a token.
                if !source.is_char_boundary(i + len) {
                    return Err("unexpected character".into());
                }
                i += len;
                push(&mut tokens, Kind::Punct, start, i, open.len(), &mut newline);
            }
        }
    }
    if !open.is_empty() {
        return Err("unbalanced brackets".into());
    }
    Ok(tokens)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'\\' || c >= 0x80
}

/// Scans a template literal's piece from `i` (just inside it) to its
/// closing backtick or to a `${`, which opens a substitution. Returns the
/// index past the piece.
fn template_piece(b: &[u8], mut i: usize, open: &mut Vec<Open>) -> Result<usize, String> {
    loop {
        match b.get(i) {
            None => return Err("unterminated template".into()),
            Some(b'\\') => i += 2,
            Some(b'`') => return Ok(i + 1),
            Some(b'$') if b.get(i + 1) == Some(&b'{') => {
                open.push(Open {
                    bracket: b'`',
                    token: None,
                    slash_after: SlashAfter::Divides,
                });
                return Ok(i + 2);
            }
            _ => i += 1,
        }
    }
}

/// Whether the token is a name read as a property (`o.default`).
fn is_property(source: &str, tokens: &[Token], i: usize) -> bool {
    i > 0 && matches!(tokens[i - 1].text(source), "." | "?.")
}

/// A `(` about to be pushed: the `)` closing the condition of `if`,
/// `while`, `for` or `with` ends a statement's head, so a `/` after it
/// starts a regex; after any other `)` it divides.
fn slash_after_parenthesis(source: &str, tokens: &[Token]) -> SlashAfter {
    let n = tokens.len();
    let head = |k: usize| {
        n >= k
            && tokens[n - k].kind == Kind::Name
            && matches!(tokens[n - k].text(source), "if" | "while" | "for" | "with")
            && !is_property(source, tokens, n - k)
    };
    // `for await (`
    let for_await =
        n >= 2 && tokens[n - 1].text(source) == "await" && tokens[n - 2].text(source) == "for";
    if head(1) || for_await {
        SlashAfter::StartsRegex
    } else {
        SlashAfter::Divides
    }
}

/// A `{` about to be pushed after `prev`: an object literal (a `/` after
/// its `}` divides) or a block or body (a `/` after it starts a regex).
fn slash_after_brace(source: &str, prev: Option<&Token>) -> SlashAfter {
    let Some(prev) = prev else {
        return SlashAfter::StartsRegex;
    };
    let text = prev.text(source);
    match prev.kind {
        Kind::Punct => match text {
            ")" | "=>" | ";" | "{" | "}" => SlashAfter::StartsRegex,
            ":" => SlashAfter::Unknown,
            _ => SlashAfter::Divides,
        },
        Kind::Name if matches!(text, "do" | "else") => SlashAfter::StartsRegex,
        Kind::Name if BEFORE_EXPRESSION.contains(&text) => SlashAfter::Divides,
        // `class A {`, `extends B {`, `try {`, `finally {`, `static {`
        Kind::Name => SlashAfter::StartsRegex,
        Kind::Template => SlashAfter::Divides,
        Kind::Str | Kind::Regex | Kind::Number => SlashAfter::Unknown,
    }
}

/// What a `/` after the last token is.
fn regex_allowed(source: &str, tokens: &[Token]) -> SlashAfter {
    let Some(prev) = tokens.last() else {
        return SlashAfter::StartsRegex;
    };
    let text = prev.text(source);
    let regex = |yes: bool| {
        if yes {
            SlashAfter::StartsRegex
        } else {
            SlashAfter::Divides
        }
    };
    match prev.kind {
        Kind::Name => regex(
            BEFORE_EXPRESSION.contains(&text) && !is_property(source, tokens, tokens.len() - 1),
        ),
        Kind::Punct => match text {
            ")" | "}" => prev.slash_after,
            "]" | "++" | "--" => SlashAfter::Divides,
            _ => SlashAfter::StartsRegex,
        },
        Kind::Template => regex(text.ends_with("${")),
        Kind::Str | Kind::Regex | Kind::Number => SlashAfter::Divides,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(f: &Factory) -> Vec<&str> {
        f.exports.iter().map(String::as_str).collect()
    }

    #[test]
    fn exports_of_every_supported_form_are_found() {
        let f = rewrite(
            "export function a() {}\n\
             export async function b() {}\n\
             export function* c() {}\n\
             export class D {}\n\
             export const e = 1;\n\
             const f = 2;\n\
             function g() {}\n\
             export { f, g as h, f as default2 };\n\
             export default function () { return 1; }\n",
        )
        .unwrap();
        assert_eq!(
            names(&f),
            ["D", "a", "b", "c", "default", "default2", "e", "f", "h"]
        );
        assert!(f.dependencies.is_empty());
        assert!(
            f.script
                .contains(";__charter_d=  function () { return 1; };"),
            "{}",
            f.script
        );
        assert!(!f.script.contains("export"));
    }

    #[test]
    fn imports_become_bindings_in_request_order() {
        let f = rewrite(
            "import './setup.js';\n\
             import d, { x, y as z, default as dd } from \"./lib.js\";\n\
             import * as ns from './lib.js'\n\
             export { w as v } from './other.js';\n\
             export const q = x + z;\n",
        )
        .unwrap();
        assert_eq!(f.dependencies, ["./setup.js", "./lib.js", "./other.js"]);
        assert_eq!(
            f.imported_names,
            [
                (1, "default".to_string()),
                (1, "x".to_string()),
                (1, "y".to_string()),
                (1, "default".to_string()),
                (2, "w".to_string())
            ]
        );
        assert_eq!(names(&f), ["q", "v"]);
        assert!(f.script.contains("const z = __charter_deps[1][\"y\"];"));
        assert!(f.script.contains("const ns = __charter_deps[1];"));
    }

    #[test]
    fn line_numbers_are_kept() {
        let source = "import { a } from './a.js';\nexport function f() {\n  return a;\n}\n";
        let f = rewrite(source).unwrap();
        let body_start = f.script.find('\n').unwrap() + 1;
        let body = &f.script[body_start..];
        for (n, line) in source.lines().enumerate() {
            let rewritten = body.lines().nth(n).unwrap();
            if line.contains("return a") {
                assert_eq!(rewritten, line, "line {n}");
            }
        }
        // The same columns: `export` became `;` and spaces.
        assert_eq!(body.lines().nth(1).unwrap(), ";      function f() {");
    }

    #[test]
    fn module_syntax_inside_strings_comments_templates_and_regexes_is_left_alone() {
        let f = rewrite(
            "// export let commented = 1;\n\
             /* import x from 'y'; */\n\
             const s = \"export let s = 1\";\n\
             const t = `import ${ { a: `export ${1}` }.a } from 'x'`;\n\
             const r = /export let\\/ [/]/g;\n\
             const half = 4 / 2 / 1;\n\
             export function f() { return s + t + r + half; }\n",
        )
        .unwrap();
        assert_eq!(names(&f), ["f"]);
        assert!(f.script.contains("\"export let s = 1\""));
    }

    #[test]
    fn forms_without_a_faithful_rewrite_are_refused() {
        for source in [
            "export * from './a.js';",
            "export * as ns from './a.js';",
            "export const { a, b } = obj;",
            "import json from './a.json' with { type: 'json' };",
            "const u = import.meta.url;",
            "function f() { return import.meta; }",
            "if (x) { export const y = 1; }",
            "const s = 'unterminated",
            "function f() {",
            "export { default } ;",
            "const a = 1, b = 2;\nexport { b };",
            "import { x } from './x.js';\nexport { x };",
        ] {
            assert!(rewrite(source).is_err(), "{source}");
        }
    }

    #[test]
    fn let_and_var_exports_are_marked_mutable() {
        let f = rewrite(
            "export let a = 1;\nexport var b = 2;\nlet c = 3;\nconst d = 4;\nexport { c as e, d };\n",
        )
        .unwrap();
        assert_eq!(names(&f), ["a", "b", "d", "e"]);
        assert_eq!(f.mutable_exports, ["a", "b", "e"]);
        let g = rewrite("import * as ns from './f.js';\nexport const x = ns;\n").unwrap();
        assert_eq!(g.namespace_imports, [0]);
    }

    #[test]
    fn functions_and_classes_assigned_to_are_marked_mutable() {
        let f = rewrite(
            "export function a() {}\n\
             export function b() {}\n\
             export class C {}\n\
             export function d() {}\n\
             export function e() {}\n\
             export function g() {}\n\
             export function h() {}\n\
             export function k() {}\n\
             function swap() { a = () => 2; C = null; d += 1; ++e; for (g of []); h ??= 1; }\n\
             export const same = b == k || b === k || b != k;\n\
             const o = {};\n\
             o.k = 1;\n",
        )
        .unwrap();
        assert_eq!(f.mutable_exports, ["C", "a", "d", "e", "g", "h"]);
    }

    #[test]
    fn names_of_the_rewrite_itself_are_refused() {
        for source in [
            "const __charter_freeze = (x) => x;\nexport const a = 1;",
            "export const a = __charter_deps;",
            "let __charter_tag = 'k';\nexport { __charter_tag };",
        ] {
            assert!(rewrite(source).is_err(), "{source}");
        }
        // Names that merely look like the factory's parameters are the
        // module's own.
        let f = rewrite("const freeze = 1, tag = 2;\nexport const a = freeze + tag;\n").unwrap();
        assert_eq!(names(&f), ["a"]);
    }

    #[test]
    fn an_export_named_proto_is_a_key_of_the_namespace() {
        let f = rewrite("const p = 1;\nexport { p as __proto__ };\n").unwrap();
        assert!(f.script.contains("[\"__proto__\"]: p"), "{}", f.script);
    }

    #[test]
    fn a_removed_statement_still_ends_the_line_before_it() {
        let f = rewrite(
            "const items = [1, 2]\nexport { items }\n(function () { items.push(3) })()\n\
             import { b } from './b.js'\n[0, 1].forEach((x) => x)\n",
        )
        .unwrap();
        let body: Vec<&str> = f.script.lines().skip(1).collect();
        assert_eq!(body[0], "const items = [1, 2]");
        assert!(
            body[1].starts_with(';') && body[1].trim() == ";",
            "{:?}",
            body[1]
        );
        assert!(
            body[3].starts_with(';') && body[3].trim() == ";",
            "{:?}",
            body[3]
        );
    }

    #[test]
    fn a_regex_after_a_condition_or_export_default_is_a_regex() {
        let f = rewrite(
            "import { a } from './a.js';\n\
             let hit = 0;\n\
             if (a) /;import{b}from'b.js';/.test('x') && hit++;\n\
             while (false) /;export{hit};/.test('y');\n\
             export default /;export{x};/i.test(';export{x};');\n\
             export const half = a.default / 2 / 1, q = (a) / 2;\n",
        )
        .unwrap();
        assert_eq!(f.dependencies, ["./a.js"]);
        assert_eq!(names(&f), ["default", "half"]);
        assert!(f.script.contains("/;import{b}from'b.js';/.test('x')"));
        // After a block a `/` starts a regex; after an object literal it
        // divides; after a `{` that follows a `:` the scanner cannot tell.
        assert!(rewrite("function f() {}\n/export/.test('');\nexport { f };").is_ok());
        assert!(rewrite("const o = { a: 1 } / 2;\nexport { o };").is_ok());
        assert!(rewrite("const o = { a: {} / 2 };\nexport { o };").is_err());
    }

    #[test]
    fn eval_arguments_and_anonymous_default_classes_are_refused() {
        for source in [
            "export function f() { return eval('1'); }",
            "export const f = () => arguments;",
            "export default class { static n = this.name; }",
            "export default class extends Object {}",
        ] {
            assert!(rewrite(source).is_err(), "{source}");
        }
        // As property names they are only names.
        assert!(rewrite("const o = { eval: 1 };\nexport const v = o.eval + o.arguments;").is_ok());
        assert!(rewrite("export const v = (0, eval)('1');").is_ok());
    }

    #[test]
    fn destructuring_assignment_marks_a_binding_mutable() {
        let f = rewrite(
            "export function g() {}\nexport class C {}\nexport function h() {}\n\
             export function k() {}\nexport function m() {}\nexport function n() {}\n\
             export function p() {}\n\
             function swap(o) {\n\
               [g, C] = [() => 2, class {}];\n\
               ({ h } = o);\n\
               ({ x: k } = o);\n\
               [[m]] = [[1]];\n\
               for ([p] of []);\n\
               const [n2] = [n];\n\
               const { n: n3 } = { n };\n\
               return [n, p];\n\
             }\n",
        )
        .unwrap();
        assert_eq!(f.mutable_exports, ["C", "g", "h", "k", "m", "p"]);
    }

    #[test]
    fn keywords_as_keys_and_methods_are_not_module_syntax() {
        let f = rewrite(
            "const o = { import: 1, export: 2 };\n\
             class K { static export() { return 1; } get import() { return 2; } }\n\
             export { o, K };\n",
        )
        .unwrap();
        assert_eq!(names(&f), ["K", "o"]);
    }

    #[test]
    fn columns_and_lines_hold_across_wide_characters_and_line_separators() {
        let f =
            rewrite("import { a } from './a.js' /* \u{1F600} \u{2028} */;\nexport const x = a;\n")
                .unwrap();
        let body = &f.script[f.script.find('\n').unwrap() + 1..];
        // The emoji is two UTF-16 units, so two spaces; the line separator
        // is kept, so the module's next line is still the third.
        let first: &str = body.split('\u{2028}').next().unwrap();
        assert_eq!(
            first.encode_utf16().count(),
            "import { a } from './a.js' /* \u{1F600} "
                .encode_utf16()
                .count()
        );
        assert!(body.contains('\u{2028}'));
    }

    #[test]
    fn an_anonymous_default_function_keeps_its_columns() {
        let source = "export default function () { throw new Error('x'); }\n(1);\n";
        let f = rewrite(source).unwrap();
        let line = f.script.lines().nth(1).unwrap();
        assert_eq!(line.find("throw"), source.find("throw"));
        // The `;` after its body keeps `(1)` from calling it.
        assert!(line.ends_with("};"), "{line}");
    }

    #[test]
    fn a_module_with_many_exports_is_rewritten() {
        // Once quadratic in the number of exports: 50,000 took the rewrite
        // past any time limit.
        let n = 50_000;
        let mut source: String = (0..n).map(|k| format!("let a{k} = 0;\n")).collect();
        source.push_str("export { ");
        source.push_str(
            &(0..n)
                .map(|k| format!("a{k}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        source.push_str(" };\nexport function bump() { a7 += 1; }\n");
        let f = rewrite(&source).unwrap();
        assert_eq!(f.exports.len(), n + 1);
        assert_eq!(f.mutable_exports.len(), n);
    }

    #[test]
    fn escaped_names_and_other_ways_to_the_factory_scope_are_refused() {
        for source in [
            "export const a = \\u0061rguments;",
            "const \\u005f_charter_freeze = (o) => o;\nexport const a = 1;",
            "export const v = \\u0065val('1');",
            "export const v = (eval)('1');",
            "export const v = ((eval))('1');",
            "export const v = eval?.('1');",
            "export const f = () => (true ? arguments : 0);",
            "export const n\u{a0}= 1;",
        ] {
            assert!(rewrite(source).is_err(), "{source}");
        }
        assert!(rewrite("export const v = (0, eval)('1'), o = { arguments: 1 };").is_ok());
    }

    #[test]
    fn parenthesised_targets_mark_a_binding_mutable() {
        let f = rewrite(
            "export function f() {}\nexport function g() {}\nexport function h() {}\n\
             export function k() {}\n\
             function swap() { (f) = 1; [(g)] = [2]; (h)++; return [k(f), (k)]; }\n",
        )
        .unwrap();
        assert_eq!(f.mutable_exports, ["f", "g", "h"]);
    }

    #[test]
    fn a_hashbang_ends_at_any_line_terminator() {
        let f = rewrite("#!x\u{2028}export function h() { return 1; }\n").unwrap();
        assert!(
            f.script.contains("function h() { return 1; }"),
            "{}",
            f.script
        );
    }

    #[test]
    fn default_expressions_are_renamed_only_when_they_are_functions() {
        assert!(rewrite("export default (class { static n = this.name; });").is_err());
        assert!(rewrite("export default ((class extends Object {}));").is_err());
        let rename = "__charter_define(__charter_d, \"name\"";
        for (source, renamed) in [
            ("export default (a) => a;", true),
            ("export default ((function () {}));", true),
            ("export default async () => 1;", true),
            ("export default x => x;", true),
            ("const p = 1;\nexport default p;", false),
            ("export default new Proxy(function () {}, {});", false),
            ("export default (class Named {});", false),
        ] {
            let f = rewrite(source).unwrap();
            assert_eq!(f.script.contains(rename), renamed, "{source}");
        }
    }

    #[test]
    fn export_default_written_with_more_space_keeps_its_columns() {
        for source in [
            "export  default function () { return 1; }\n",
            "export /* c */ default () => 1;\n",
        ] {
            let f = rewrite(source).unwrap();
            let line = f.script.lines().nth(1).unwrap();
            assert!(line.starts_with(";__charter_d="), "{line}");
            let body = if source.contains("function") {
                "function"
            } else {
                "()"
            };
            assert_eq!(line.find(body), source.find(body), "{line}");
        }
    }

    #[test]
    fn the_probe_marks_every_edit() {
        let f = rewrite(
            "import { a } from './a.js';\nexport const x = a;\nexport default function () {}\n",
        )
        .unwrap();
        assert_eq!(f.probes, 4);
        assert!(f
            .probe
            .contains("import \"__charter_probe_0\";import { a }"));
        assert!(f
            .probe
            .contains("import \"__charter_probe_1\";export const x"));
        assert!(f.probe.contains("import \"__charter_probe_2\";export default function () {}import \"__charter_probe_3\";"));
    }

    #[test]
    fn many_names_in_deep_brackets_are_scanned_once() {
        // Once a walk out through every enclosing bracket per name: 150,000
        // names 200 brackets deep took each request past its time limit.
        let names = vec!["f"; 50_000].join(",");
        let source = format!(
            "export function f() {{}}\nconst x = {}{names}{};\nexport const n = x.length;\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let f = rewrite(&source).unwrap();
        assert!(f.mutable_exports.is_empty());
    }

    #[test]
    fn dynamic_import_is_left_as_it_is() {
        let f = rewrite("export async function f() { return import('./a.js'); }").unwrap();
        assert!(f.script.contains("return import('./a.js');"));
        assert!(f.dependencies.is_empty());
    }

    #[test]
    fn property_names_that_are_keywords_are_not_module_syntax() {
        let f = rewrite("const o = { a: 1 };\nconst v = o.import + o?.export;\nexport { o };\n")
            .unwrap();
        assert_eq!(names(&f), ["o"]);
    }
}
