"""One layer conversion in its own process: `python -m nydusfs.convert.worker OPTIONS_JSON`.

The parent streams the source layer (as stored: gzip, zstd or plain) into stdin and reads one
JSON line from stdout. Layers convert in separate processes because tar parsing and tree
building hold the GIL: threads would convert several layers no faster than one. An error is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from ..create.pipeline import CreateOptions, create
    from ..errors import NydusfsError

    doc = json.loads(argv[0])
    doc["prefetch_patterns"] = [bytes.fromhex(p) for p in doc["prefetch_patterns"]]
    name = doc.pop("name")
    try:
        result = create(name, CreateOptions(**doc), stream=sys.stdin.buffer)
        while sys.stdin.buffer.read(1 << 20):  # the parent checks the digest over every byte
            pass
    except NydusfsError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps({"inodes": result.inode_count, "warnings": result.warnings}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
