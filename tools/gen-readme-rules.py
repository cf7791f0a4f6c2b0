#!/usr/bin/env python3
"""Rewrites the rule table in README.md (between the RULES markers) from mappings/*/rules.json.

Run after changing a rule: `python3 tools/gen-readme-rules.py`. tests/cli.rs fails when a rule of
the catalogue is missing from the README.
"""
import json
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
rows = ["| code | applies to | severity | location | message (en) |", "|---|---|---|---|---|"]
for folder, label in (("common", "all"), ("de", "DE"), ("nl", "NL"), ("fi", "FI")):
    path = root / "mappings" / folder / "rules.json"
    if not path.exists():
        continue
    for rule in json.loads(path.read_text(encoding="utf-8"))["rules"]:
        message = rule["message"]["en"].replace("|", "/")
        location = rule["location"] or "-"
        rows.append(f"| `{rule['code']}` | {label} | {rule['severity']} | `{location}` | {message} |")
readme = root / "README.md"
text = readme.read_text(encoding="utf-8")
table = "\n".join(rows)
new, n = re.subn(r"<!-- RULES -->.*?<!-- /RULES -->", f"<!-- RULES -->\n{table}\n<!-- /RULES -->", text, flags=re.S)
if n != 1:
    raise SystemExit("README.md needs exactly one <!-- RULES --> ... <!-- /RULES --> block")
readme.write_text(new, encoding="utf-8")
print(f"{len(rows) - 2} rules written")
