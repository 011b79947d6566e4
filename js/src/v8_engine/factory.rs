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

use std::collections::BTreeMap;

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
}

/// The name given to an anonymous default export's binding; its function
/// name is put back to "default".
const DEFAULT_BINDING: &str = "__charter_default";
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
    let mut default_is_anonymous = false;
    let mut reexports = 0usize;
    // Top-level `function`, `class`, `const`, `let` and `var` names, and
    // whether they are `let` or `var`.
    let mut declared: Vec<(&str, bool)> = Vec::new();
    let mut mutable_exports: Vec<String> = Vec::new();
    let mut namespace_imports: Vec<usize> = Vec::new();
    // `export { local as exported }` pairs, checked against `declared`.
    let mut local_exports: Vec<String> = Vec::new();

    let dep_index = |deps: &mut Vec<String>, spec: String| -> usize {
        match deps.iter().position(|d| *d == spec) {
            Some(i) => i,
            None => {
                deps.push(spec);
                deps.len() - 1
            }
        }
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
        let keyword = t.kind == Kind::Name && (text == "import" || text == "export");
        let after_dot = i > 0 && matches!(tokens[i - 1].text(source), "." | "?.");
        let statement_start =
            i == 0 || t.newline_before || matches!(tokens[i - 1].text(source), ";" | "}");
        if t.depth == 0 && statement_start && t.kind == Kind::Name {
            if let Some(declared_here) = declared_name(source, &tokens[i..]) {
                declared.push(declared_here);
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
                            None => {
                                // An anonymous declaration gets a name so
                                // that it stays a declaration.
                                edits.push(Edit::blank(t.start, default_end));
                                edits.push(Edit::insert(
                                    tokens[q.at - 1].end,
                                    format!(" {DEFAULT_BINDING}"),
                                ));
                                exports.insert("default".into(), DEFAULT_BINDING.into());
                                default_is_anonymous = true;
                            }
                        }
                    }
                    _ => {
                        edits.push(Edit {
                            start: t.start,
                            end: default_end,
                            text: format!("const {DEFAULT_BINDING} ="),
                        });
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
                declared.push((name, mutable));
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
                            local_exports.push(local.clone());
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
        match declared.iter().find(|(name, _)| name == local) {
            Some((_, true)) => mutable_exports.push(exported.clone()),
            Some((_, false)) => {}
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
    for (exported, local) in &exports {
        if is_plain_name(local) && assigned_to(source, &tokens, local) {
            mutable_exports.push(exported.clone());
        }
    }
    mutable_exports.sort();
    mutable_exports.dedup();

    // The body, with the module syntax taken out.
    let mut body = String::with_capacity(source.len() + 64);
    let mut at = 0;
    edits.sort_by_key(|e| e.start);
    for e in &edits {
        if e.start < at {
            return Err("overlapping rewrites".into());
        }
        body.push_str(&source[at..e.start]);
        if e.text.is_empty() {
            // Blanked: keep the line breaks so that line numbers hold.
            body.extend(source[e.start..e.end].chars().map(|c| {
                if c == '\n' || c == '\r' {
                    c
                } else {
                    ' '
                }
            }));
        } else {
            body.push_str(&e.text);
        }
        at = e.end;
    }
    body.push_str(&source[at..]);
    if body.starts_with("#!") {
        let end = body.find('\n').unwrap_or(body.len());
        body.replace_range(..end, &" ".repeat(end));
    }

    // The namespace object: the exports' values once the body has run,
    // sorted as a module namespace's keys are, on a frozen null-prototype
    // object tagged "Module".
    let mut namespace = String::from("{ __proto__: null, ");
    for (name, value) in &exports {
        // A computed key, so that an export named `__proto__` is a key.
        namespace.push_str(&format!("[{}]: {value}, ", quote(name)));
    }
    namespace.push_str("[__charter_tag]: \"Module\" }");
    let rename = if default_is_anonymous {
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
        "(function (__charter_freeze, __charter_define, __charter_tag) {{ \"use strict\"; \
         return function ({DEPS}) {{ {header}\n\
         {body}\n\
         ;{rename}return __charter_freeze({namespace}); }}; }})\
         (Object.freeze, Object.defineProperty, Symbol.toStringTag)"
    );
    Ok(Factory {
        script,
        dependencies,
        imported_names,
        exports: exports.into_keys().collect(),
        mutable_exports,
        namespace_imports,
    })
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

/// Whether `name` is assigned to anywhere in the module, other than where
/// it is declared (`name = `, `name += `, `name++`, `--name`,
/// `for (name of ...)`), in any scope: a local that shadows it counts too,
/// which only costs the fast path. Destructuring assignment
/// (`[name] = ...`) is not seen.
fn assigned_to(source: &str, tokens: &[Token], name: &str) -> bool {
    let text = |n: usize| tokens.get(n).map(|t| t.text(source));
    let adjacent = |a: usize, b: usize| tokens[a].end == tokens[b].start;
    (0..tokens.len()).any(|i| {
        if tokens[i].kind != Kind::Name || text(i) != Some(name) {
            return false;
        }
        // A property, or the declaration itself (`const name = ...`).
        if i > 0 && matches!(text(i - 1), Some("." | "?." | "const" | "let" | "var")) {
            return false;
        }
        if i > 0 && matches!(text(i - 1), Some("++" | "--")) {
            return true;
        }
        if matches!(text(i + 1), Some("++" | "--")) {
            return true;
        }
        if i >= 2 && text(i - 1) == Some("(") && text(i - 2) == Some("for")
            || i >= 3 && text(i - 1) == Some("(") && text(i - 2) == Some("await")
        {
            if matches!(text(i + 1), Some("of" | "in")) {
                return true;
            }
        }
        // `=` or an operator of one to three characters glued to `=`
        // (`+=`, `>>>=`, `??=`); `==` is a comparison. `<=` and `>=` read
        // as assignments too, harmlessly.
        let mut j = i + 1;
        while j < tokens.len()
            && j < i + 4
            && tokens[j].kind == Kind::Punct
            && matches!(
                text(j),
                Some("+" | "-" | "*" | "/" | "%" | "<" | ">" | "&" | "|" | "^" | "?")
            )
            && (j == i + 1 || adjacent(j - 1, j))
        {
            j += 1;
        }
        text(j) == Some("=") && (j == i + 1 || adjacent(j - 1, j)) && text(j + 1) != Some("=")
    })
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

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Brackets (and template substitutions) open around the token.
    depth: usize,
    /// A line break between this token and the one before.
    newline_before: bool,
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
];

/// Splits `source` into the tokens the rewrite needs to see (comments and
/// white space dropped). Fails on anything it cannot follow.
fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let b = source.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    // Open brackets; b'`' marks a template substitution.
    let mut open: Vec<u8> = Vec::new();
    let mut newline = false;
    let mut i = 0;
    if b.starts_with(b"#!") {
        while i < b.len() && b[i] != b'\n' {
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
            b' ' | b'\t' | 0x0b | 0x0c => i += 1,
            b'/' if next == Some(b'/') => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let end = source[i + 2..].find("*/").ok_or("unterminated comment")? + i + 4;
                if source[i..end].contains(['\n', '\r']) {
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
            b'`' => {
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
            b'}' if open.last() == Some(&b'`') => {
                open.pop();
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
                push(&mut tokens, Kind::Punct, i, i + 1, open.len(), &mut newline);
                open.push(c);
                i += 1;
            }
            b'}' | b')' | b']' => {
                let opener = match c {
                    b'}' => b'{',
                    b')' => b'(',
                    _ => b'[',
                };
                if open.pop() != Some(opener) {
                    return Err("unbalanced brackets".into());
                }
                push(&mut tokens, Kind::Punct, i, i + 1, open.len(), &mut newline);
                i += 1;
            }
            b'/' if regex_allowed(source, tokens.last()) => {
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
            b'0'..=b'9' => {
                let start = i;
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
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let start = i;
                i += 1;
                while i < b.len() && (is_name_byte(b[i]) || b[i] == b'.') {
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
                while i < b.len() && is_name_byte(b[i]) {
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
fn template_piece(b: &[u8], mut i: usize, open: &mut Vec<u8>) -> Result<usize, String> {
    loop {
        match b.get(i) {
            None => return Err("unterminated template".into()),
            Some(b'\\') => i += 2,
            Some(b'`') => return Ok(i + 1),
            Some(b'$') if b.get(i + 1) == Some(&b'{') => {
                open.push(b'`');
                return Ok(i + 2);
            }
            _ => i += 1,
        }
    }
}

/// Whether a `/` after `prev` starts a regular expression (rather than
/// dividing). After `)` and `]` it divides; after `}` it is taken to start
/// a statement (a misreading makes the rewrite fail or disagree with V8,
/// and the real module is used).
fn regex_allowed(source: &str, prev: Option<&Token>) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    let text = prev.text(source);
    match prev.kind {
        Kind::Name => BEFORE_EXPRESSION.contains(&text),
        Kind::Punct => !matches!(text, ")" | "]" | "++" | "--"),
        Kind::Template => text.ends_with("${"),
        Kind::Str | Kind::Regex | Kind::Number => false,
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
        assert!(f.script.contains("function __charter_default ("));
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
        assert_eq!(body.lines().nth(1).unwrap().trim(), "function f() {");
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
