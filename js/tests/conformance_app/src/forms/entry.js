// Module forms, evaluated afresh for every request: on V8 through module
// factories (js/src/v8_engine/factory.rs), which must answer as real
// modules do (QuickJS runs real modules).
import { log } from "./order.js";
import def, { named, renamed as alias } from "./a.js";
import * as ns from "./b.js";
import anon from "./anon.js";
import arrow from "./arrow.js";
import { again, def as def2 } from "./reexport.js";
log("entry");
let calls = 0;

export function forms() {
  calls += 1;
  return {
    body: {
      order: log(),
      calls,
      def: def(),
      defName: def.name,
      named,
      alias,
      nsKeys: Object.keys(ns),
      nsTag: Object.prototype.toString.call(ns),
      nsProto: Object.getPrototypeOf(ns),
      nsExtensible: Object.isExtensible(ns),
      nsF: ns.f(),
      nsK: typeof ns.K,
      anon: anon(),
      anonName: anon.name,
      arrow: arrow(1),
      arrowName: arrow.name,
      again,
      sameDefault: def2 === def,
      strictThis: (function () { return this === undefined; })(),
    },
  };
}

export function stack() {
  return { body: String(new Error("here").stack) };
}
