import { log } from "./order.js";
log("a");
export default function def() {
  return "def";
}
export const named = 1;
const r = 2;
export { r as renamed };
