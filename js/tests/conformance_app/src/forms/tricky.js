// Module text the rewrite must not change the meaning of (no semicolons
// on purpose: removing an import must still end the line before it).
import * as dep from "./tricky_dep.js"
const items = [1, 2]
import { base } from "./tricky_dep.js"
(function () { items.push(3) })()
let hit = 0
if (base) /;import{nothing}from'nowhere.js';/.test(";import{nothing}from'nowhere.js';") && hit++
// Names a module may use for itself.
const freeze = (o) => JSON.stringify(o)
const tag = "t"
const o = { import: 1, export: 2 }

export function tricky() {
  return {
    body: {
      items,
      hit,
      keys: Object.keys(dep),
      tagEnumerable: Object.getOwnPropertyDescriptor(dep, Symbol.toStringTag).enumerable,
      spreadTag: Object.prototype.toString.call({ ...dep }),
      depTag: dep.tag,
      anonymous: String(dep.default),
      anonymousName: dep.default.name,
      freeze: freeze({ a: 1 }),
      tag,
      keywordsAsKeys: o.import + o.export,
    },
  };
}
