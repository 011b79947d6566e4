import "./b.js";
export { named as again, default as def } from "./a.js";
