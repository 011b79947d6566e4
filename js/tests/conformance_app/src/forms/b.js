import { log } from "./order.js";
log("b");
export class K {}
export function f() {
  return "f";
}
