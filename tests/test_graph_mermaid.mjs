// Parses Mermaid texts with the real Mermaid parser (run by tests/test_graph_mermaid.py).
//
// stdin: a JSON array of diagram texts. stdout: a JSON array, one entry per text:
// {"ok": true, "type": ..., "states": {id: {"descriptions": [...], "classes": [...]}}, "relations": [[from, to, title]]}
// or {"ok": false, "error": "..."}. Mermaid needs a DOM to load, even to parse: jsdom provides one.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let input = '';
for await (const chunk of process.stdin) input += chunk;
const texts = JSON.parse(input);
const out = [];
for (const text of texts) {
  try {
    const parsed = await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const db = diagram.db;
    const states = {};
    for (const [id, s] of db.getStates()) {
      states[id] = { descriptions: s.descriptions ?? [], classes: s.classes ?? [] };
    }
    const relations = db.getRelations().map((r) => [r.id1, r.id2, r.relationTitle ?? '']);
    out.push({ ok: true, type: parsed.diagramType, states, relations });
  } catch (e) {
    out.push({ ok: false, error: String(e && e.message ? e.message : e).split('\n').slice(0, 3).join(' | ') });
  }
}
process.stdout.write(JSON.stringify(out));
