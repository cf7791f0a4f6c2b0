#!/usr/bin/env python3
"""Generates schemas/fhir-r4-elements.json: the element metadata the FHIR XML <-> JSON converter needs.

FHIR XML does not say which elements repeat (JSON arrays), which are primitives of which JSON kind
(numbers and booleans are not strings), which `value[x]` choice names exist, or where a
`contentReference` points. That metadata comes from the official FHIR R4 (4.0.1) StructureDefinitions,
never from hand-written tables: this script reads them from an npm tarball and writes one compact,
deterministic JSON file (sorted keys, one line per type).

Source. The official definitions ship in HL7's npm packages for FHIR 4.0.1, which hold the core
StructureDefinitions as `package/StructureDefinition-<Type>.json`: `hl7.fhir.r4.core@4.0.1` and
`hl7.fhir.r4.examples@4.0.1` (the examples package contains every resource of the specification,
the core StructureDefinitions included). The npm registry reachable from this project's machines
does not serve `hl7.fhir.r4.core` (it lists the name without versions), so the checked-in file was
generated from `hl7.fhir.r4.examples@4.0.1` (the same tarball as `../shared/corpus/hl7-fhir-r4-examples`,
sha1 537ea7db3f3c7b3575fe2eaa7808bad21261cca3). Either package gives the same output; a run over the
StructureDefinitions of the 4.0.1 site build (profiles-types.json + <type>.profile.json) gave an
identical result too. Only StructureDefinitions with a http://hl7.org/fhir/StructureDefinition/ url
and derivation `specialization` are read: profiles and extension definitions do not change the wire
format.

Regenerate (Python 3 standard library only; the tarball is not committed):

    cd /tmp && npm pack hl7.fhir.r4.examples@4.0.1       # or hl7.fhir.r4.core@4.0.1 where served
    python3 tools/gen-fhir-xml-metadata.py /tmp/hl7.fhir.r4.examples-4.0.1.tgz \
        > schemas/fhir-r4-elements.json

The output's `source` header records the tarball's package name, version, sha1 (`shasum`) and
sha512 (`integrity`, as npm prints them), both computed here from the bytes read: regenerating from
a tarball with the same shasum must reproduce the file byte for byte.

Output shape:
  {"source": {...}, "primitives": {fhirType: "boolean"|"integer"|"decimal"|"string"},
   "types": {TypeName: {"kind": "resource"|"complex-type"|"primitive-type",
                        "elements": {"Type.path": Element}}}}
  Element = {"n": definition order (for writing XML in order),
             "max": "1" | "*" (anything but 1 repeats, i.e. is a JSON array),
             "type": a primitive type name, a complex type name, "BackboneElement"/"Element" (children
                     inline under this path), "Resource" (a nested resource: contained,
                     Bundle.entry.resource, ...) or "xhtml" (narrative div),
             "ref": instead of "type" for a contentReference: the path whose children repeat here,
             "attr": true when XML carries the element as an attribute (Element.id, Extension.url,
                     primitive value)}
  Choice elements `value[x]` appear only as their expansions (`Observation.valueQuantity`, ...),
  which share the `n` of the choice.
"""

import hashlib
import base64
import io
import json
import sys
import tarfile

FHIRPATH_SYSTEM = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
INLINE = ("BackboneElement", "Element")


def fail(message):
    sys.stderr.write("gen-fhir-xml-metadata: " + message + "\n")
    sys.exit(1)


def read_tarball(path):
    """Returns (package.json, {member name: bytes} of the .json members, sha1 hex, sha512 SRI)."""
    with open(path, "rb") as f:
        raw = f.read()
    shasum = hashlib.sha1(raw).hexdigest()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(raw).digest()).decode("ascii")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            wanted = base == "package.json" or base.startswith("StructureDefinition-")
            if member.isfile() and member.name.endswith(".json") and wanted:
                data = tar.extractfile(member)
                if data is not None:
                    files[member.name] = data.read()
    if "package/package.json" not in files:
        fail("not an npm tarball (no package/package.json)")
    return json.loads(files["package/package.json"]), files, shasum, integrity


def structure_definitions(files):
    """The core StructureDefinitions of the package (`package/StructureDefinition-*.json`)."""
    sds = []
    for name in sorted(files):
        base = name.rsplit("/", 1)[-1]
        if name.startswith("package/") and name.count("/") == 1 and base.startswith("StructureDefinition-"):
            sd = json.loads(files[name])
            if sd.get("resourceType") == "StructureDefinition":
                sds.append(sd)
    if not sds:
        fail("no StructureDefinitions found: expected package/StructureDefinition-*.json")
    return sds


def type_code(t):
    """The FHIR type of an ElementDefinition.type entry (System.* codes carry it in an extension)."""
    code = t["code"]
    if code.startswith(FHIRPATH_SYSTEM):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        # xhtml.id lacks the extension; the FHIRPath system type names its primitive.
        system = code[len(FHIRPATH_SYSTEM):]
        if system in ("String", "Boolean", "Integer", "Decimal", "Date", "DateTime", "Time"):
            return system[0].lower() + system[1:]
        fail("system type without fhir-type extension: " + code)
    return code


def main():
    if len(sys.argv) != 2:
        fail("usage: gen-fhir-xml-metadata.py PACKAGE.tgz > schemas/fhir-r4-elements.json")
    package, files, shasum, integrity = read_tarball(sys.argv[1])
    if package.get("fhirVersions") != ["4.0.1"]:
        fail("the package is not for FHIR 4.0.1: " + str(package.get("fhirVersions")))
    sds = structure_definitions(files)
    primitives, types = build(sds)
    source = {
        "package": package.get("name"),
        "version": package.get("version"),
        "shasum": shasum,
        "integrity": integrity,
        "read": "package/StructureDefinition-*.json: " + str(len(types)) + " concrete specializations",
        "fhirVersion": "4.0.1",
        "generator": "tools/gen-fhir-xml-metadata.py",
    }
    write(sys.stdout, source, primitives, types)


def build(sds):
    """(primitives, types) from the StructureDefinitions of FHIR 4.0.1."""
    core = {}
    for sd in sds:
        if sd.get("url", "").startswith("http://hl7.org/fhir/StructureDefinition/"):
            core[sd["id"]] = sd
    for sd in core.values():
        if sd.get("derivation") == "specialization" and sd.get("fhirVersion") != "4.0.1":
            # A type of another FHIR version would change the wire format silently.
            fail(sd["id"] + " is FHIR " + str(sd.get("fhirVersion")) + ", not 4.0.1")
    specialised = {k: sd for k, sd in core.items()
                   if sd.get("kind") != "logical" and sd.get("derivation", "specialization") == "specialization"}
    # Constrained types (SimpleQuantity, MoneyQuantity) are their base type on the wire.
    wire_type = {k: k for k in specialised}
    for k, sd in core.items():
        if sd.get("derivation") == "constraint" and sd.get("kind") != "logical" and sd.get("type") in specialised:
            wire_type[k] = sd["type"]

    # JSON kind of each primitive: the FHIRPath system type at the root of its base chain
    # (positiveInt -> integer -> System.Integer), since derived primitives declare System.String.
    def root_primitive(name):
        sd = specialised[name]
        base = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
        if base in specialised and specialised[base].get("kind") == "primitive-type":
            return root_primitive(base)
        return sd

    kinds = {"Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}
    primitives = {}
    for name, sd in specialised.items():
        if sd.get("kind") != "primitive-type":
            continue
        root = root_primitive(name)
        values = [e for e in root["snapshot"]["element"] if e["path"] == root["id"] + ".value"]
        if len(values) != 1:
            fail("primitive " + name + " has no value element")
        system = values[0]["type"][0]["code"]
        primitives[name] = kinds.get(system[len(FHIRPATH_SYSTEM):], "string") \
            if system.startswith(FHIRPATH_SYSTEM) else "string"

    types = {}
    for name in sorted(specialised):
        sd = specialised[name]
        if sd.get("abstract"):
            continue  # Element, BackboneElement, Resource, DomainResource: never on the wire as such
        snapshot = sd["snapshot"]["element"]
        paths = {e["path"] for e in snapshot}
        elements = {}
        for n, e in enumerate(snapshot):
            path = e["path"]
            if "." not in path:
                continue
            if e.get("max") == "0":
                continue
            entry = {"n": n, "max": "1" if e.get("max") == "1" else "*"}
            if "xmlAttr" in e.get("representation", []):
                entry["attr"] = True
            if "contentReference" in e:
                ref = e["contentReference"]
                if not ref.startswith("#") or ref[1:] not in paths:
                    fail(path + ": unresolvable contentReference " + ref)
                entry["ref"] = ref[1:]
                elements[path] = entry
                continue
            codes = [type_code(t) for t in e.get("type", [])]
            if not codes:
                fail(path + " has no type")
            codes = [wire_type.get(c, c) for c in codes]
            for c in codes:
                if c not in specialised:
                    fail(path + ": unknown type " + c)
            if path.endswith("[x]"):
                stem = path[:-3]
                for c in codes:
                    expanded = dict(entry, type=c)
                    elements[stem + c[0].upper() + c[1:]] = expanded
                continue
            if len(codes) != 1:
                fail(path + ": several types without [x]")
            code = codes[0]
            if code in INLINE and not any(p.startswith(path + ".") for p in paths):
                fail(path + ": " + code + " without inline children")
            entry["type"] = code
            elements[path] = entry
        types[name] = {"kind": sd["kind"], "elements": elements}
    return primitives, types


def write(out, source, primitives, types):
    """One line per type, sorted keys: small diffs when the input changes."""
    def dump(v):
        return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    out.write("{\n" + dump("source") + ":" + dump(source) + ",\n")
    out.write(dump("primitives") + ":" + dump(primitives) + ",\n")
    out.write(dump("types") + ":{\n")
    names = sorted(types)
    for i, name in enumerate(names):
        out.write(dump(name) + ":" + dump(types[name]) + ("," if i + 1 < len(names) else "") + "\n")
    out.write("}}\n")


if __name__ == "__main__":
    main()
