// Copies the front-end files the pages use from node_modules into static/vendor/.
// Run by `make static` after `npm ci`; static/vendor/ is git-ignored.
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

// A trailing sourceMappingURL comment names a .map file we do not copy: Django's manifest
// storage (production collectstatic) would fail on the missing file, so it is dropped.
const dropSourceMap = (text) => text.replace(/\n?(\/\/# sourceMappingURL=[^\n]*|\/\*# sourceMappingURL=[^*]*\*\/)\s*$/, "\n");

const files = [
  ["htmx.org/dist/htmx.min.js", "htmx/htmx.min.js"],
  // Label Studio's editor (Apache-2.0): the annotate pages embed it (window.LabelStudio)
  ["@heartexlabs/label-studio/build/static/js/main.js", "label-studio/main.js", dropSourceMap],
  ["@heartexlabs/label-studio/build/static/css/main.css", "label-studio/main.css", dropSourceMap],
  ["@heartexlabs/label-studio/build/static/js/main.js.LICENSE.txt", "label-studio/main.js.LICENSE.txt"],
];
const out = "static/vendor";
for (const [from, to, transform] of files) {
  const src = join("node_modules", from);
  if (!existsSync(src)) {
    console.error(`vendor: ${src} is missing; run npm ci first`);
    process.exit(1);
  }
  const dest = join(out, to);
  mkdirSync(dirname(dest), { recursive: true });
  if (transform) {
    writeFileSync(dest, transform(readFileSync(src, "utf8")));
  } else {
    cpSync(src, dest);
  }
  console.log(`vendor: ${src} -> ${dest}`);
}
