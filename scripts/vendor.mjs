// Copies the front-end files the pages use from node_modules into static/vendor/.
// Run by `make static` after `npm ci`; static/vendor/ is git-ignored.
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";

const files = [
  ["htmx.org/dist/htmx.min.js", "htmx/htmx.min.js"],
];
const out = "static/vendor";
for (const [from, to] of files) {
  const src = join("node_modules", from);
  if (!existsSync(src)) {
    console.error(`vendor: ${src} is missing; run npm ci first`);
    process.exit(1);
  }
  mkdirSync(dirname(join(out, to)), { recursive: true });
  cpSync(src, join(out, to));
  console.log(`vendor: ${src} -> ${join(out, to)}`);
}
