// Every test file of the port, for Node 21 and later: there `node --test ports/js` reads
// ports/js as a glob that names the folder itself, runs the folder as a script, and Node
// resolves that to package.json's "main", this file. (Node 18 and 20 search the folder for
// *.test.js files instead and do not run this one.)
import "./dact.test.js";
import "./faults.test.js";
import "./model.test.js";
import "./safetensors.test.js";
import "./tokenizer.test.js";
