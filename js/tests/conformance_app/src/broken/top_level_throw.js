throw new Error("thrown while loading");
export function main() {
  return {};
}
