//! What per-request isolation costs on V8 130, one thread: a fresh
//! context per request (what the engine did before `harden.js`) against one hardened
//! context (intrinsics and the global object frozen, RegExp legacy
//! statics, WeakRef and FinalizationRegistry removed) with a fresh module
//! instance per request, with and without a code cache. Ends with probes
//! showing that the hardened realm refuses the usual ways of leaving state
//! behind.
//!
//! `cargo run --release -p charter-js --example isolation_costs`
use std::time::Instant;

const APP: &str = r#"
const helpers = [];
for (let i = 0; i < 8; i++) helpers.push((x) => x + i);
export function handler(body) {
  const req = JSON.parse(body);
  const out = { id: req.id, msg: req.msg.toUpperCase(), n: helpers.length };
  return JSON.stringify(out);
}
"#;

const FREEZE: &str = r#"
(() => {
  const seen = new Set();
  const freeze = (o) => {
    if ((typeof o !== 'object' && typeof o !== 'function') || o === null || seen.has(o)) return;
    seen.add(o);
    Object.freeze(o);
    freeze(Object.getPrototypeOf(o));
    for (const k of Reflect.ownKeys(o)) {
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (!d) continue;
      if ('value' in d) freeze(d.value); else { freeze(d.get); freeze(d.set); }
    }
  };
  for (const k of ['$1','$2','$3','$4','$5','$6','$7','$8','$9','input','$_','lastMatch','$&','lastParen','$+','leftContext','$`','rightContext',"$'"]) delete RegExp[k];
  delete globalThis.FinalizationRegistry; delete globalThis.WeakRef;
  // intrinsics not reachable by name
  freeze(Object.getPrototypeOf(function*(){}));
  freeze(Object.getPrototypeOf(async function(){}));
  freeze(Object.getPrototypeOf(async function*(){}));
  freeze(Object.getPrototypeOf([][Symbol.iterator]()));
  freeze(Object.getPrototypeOf(new Map()[Symbol.iterator]()));
  freeze(Object.getPrototypeOf(new Set()[Symbol.iterator]()));
  freeze(Object.getPrototypeOf(''[Symbol.iterator]()));
  freeze(Object.getPrototypeOf(Uint8Array));
  freeze(globalThis);
})();
"#;

fn compile_module<'s>(
    scope: &mut v8::HandleScope<'s>,
    src: &str,
    cache: Option<&[u8]>,
) -> v8::Local<'s, v8::Module> {
    let code = v8::String::new(scope, src).unwrap();
    let name = v8::String::new(scope, "app.js").unwrap();
    let origin = v8::ScriptOrigin::new(
        scope,
        name.into(),
        0,
        0,
        false,
        0,
        None,
        false,
        false,
        true,
        None,
    );
    if let Some(c) = cache {
        let mut source = v8::script_compiler::Source::new_with_cached_data(
            code,
            Some(&origin),
            v8::script_compiler::CachedData::new(c),
        );
        v8::script_compiler::compile_module2(
            scope,
            &mut source,
            v8::script_compiler::CompileOptions::ConsumeCodeCache,
            v8::script_compiler::NoCacheReason::NoReason,
        )
        .unwrap()
    } else {
        let mut source = v8::script_compiler::Source::new(code, Some(&origin));
        v8::script_compiler::compile_module(scope, &mut source).unwrap()
    }
}

fn resolve<'a>(
    _c: v8::Local<'a, v8::Context>,
    _s: v8::Local<'a, v8::String>,
    _a: v8::Local<'a, v8::FixedArray>,
    _r: v8::Local<'a, v8::Module>,
) -> Option<v8::Local<'a, v8::Module>> {
    None
}

fn run_handler(scope: &mut v8::HandleScope, module: v8::Local<v8::Module>, i: usize) -> String {
    module.instantiate_module(scope, resolve).unwrap();
    module.evaluate(scope).unwrap();
    let ns = module.get_module_namespace().to_object(scope).unwrap();
    let k = v8::String::new(scope, "handler").unwrap();
    let f = v8::Local::<v8::Function>::try_from(ns.get(scope, k.into()).unwrap()).unwrap();
    let body = v8::String::new(scope, &format!("{{\"id\": {i}, \"msg\": \"hello\"}}")).unwrap();
    let recv = v8::undefined(scope).into();
    let r = f.call(scope, recv, &[body.into()]).unwrap();
    r.to_rust_string_lossy(scope)
}

fn main() {
    let platform = v8::new_default_platform(0, false).make_shared();
    v8::V8::initialize_platform(platform);
    v8::V8::initialize();
    let n = 5000;
    let isolate = &mut v8::Isolate::new(Default::default());
    let scope = &mut v8::HandleScope::new(isolate);

    // A: fresh context + compile per request.
    let t = Instant::now();
    for i in 0..n {
        let scope = &mut v8::HandleScope::new(scope);
        let ctx = v8::Context::new(scope, Default::default());
        let scope = &mut v8::ContextScope::new(scope, ctx);
        let m = compile_module(scope, APP, None);
        let _ = run_handler(scope, m, i);
    }
    let a = n as f64 / t.elapsed().as_secs_f64();
    println!("A fresh context per request:        {a:>9.0} req/s");

    // B: one hardened context, fresh module instance per request (code cache).
    let ctx = v8::Context::new(scope, Default::default());
    let scope = &mut v8::ContextScope::new(scope, ctx);
    {
        let src = v8::String::new(scope, FREEZE).unwrap();
        let s = v8::Script::compile(scope, src, None).unwrap();
        s.run(scope).unwrap();
    }
    let cache: Vec<u8> = {
        let m = compile_module(scope, APP, None);
        let unbound = m.get_unbound_module_script(scope);
        unbound.create_code_cache().unwrap().to_vec()
    };
    let t = Instant::now();
    for i in 0..n {
        let scope = &mut v8::HandleScope::new(scope);
        let m = compile_module(scope, APP, Some(&cache));
        let _ = run_handler(scope, m, i);
    }
    let b = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "B hardened realm, module per request: {b:>9.0} req/s  ({:.1}x A)",
        b / a
    );

    // B2 without code cache
    let t = Instant::now();
    for i in 0..n {
        let scope = &mut v8::HandleScope::new(scope);
        let m = compile_module(scope, APP, None);
        let _ = run_handler(scope, m, i);
    }
    let b2 = n as f64 / t.elapsed().as_secs_f64();
    println!("B2 hardened, no code cache:          {b2:>9.0} req/s");

    // Leak probes in the hardened realm.
    let probe = |scope: &mut v8::HandleScope, src: &str| -> String {
        let tc = &mut v8::TryCatch::new(scope);
        let s = v8::String::new(tc, src).unwrap();
        match v8::Script::compile(tc, s, None).and_then(|s| s.run(tc)) {
            Some(v) => v.to_rust_string_lossy(tc),
            None => format!(
                "threw: {}",
                tc.exception()
                    .map(|e| e.to_rust_string_lossy(tc))
                    .unwrap_or_default()
            ),
        }
    };
    for src in [
        "'use strict'; globalThis.leak = 1; 'wrote global'",
        "'use strict'; Array.prototype.leak = 1; 'wrote proto'",
        "'use strict'; Object.prototype.toString = () => 'x'; 'wrote toString'",
        "/(a)/.exec('a'); typeof RegExp.$1",
        "typeof FinalizationRegistry",
        "'use strict'; JSON.parse = null; 'wrote JSON'",
    ] {
        println!("probe {src:?} -> {}", probe(scope, src));
    }
}
