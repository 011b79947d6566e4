export const base = 1;
export const tag = "mine";
export default function () { return "anonymous"; }
