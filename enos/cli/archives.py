"""``enos archive``: one tar.gz of an experiment for someone else to check and redo, and
its check. Its usage text (docopt) beside a function that parses, calls
:mod:`enos.archive`, prints."""
from __future__ import annotations

from enos.cli.options import data, out, output

ARCHIVE = """Write one archive that lets someone else check and redo an experiment, or check one.

The archive (a .tar.gz) holds: the reservation and campaign files and the scripts and
playbooks they name; enos' version, Python's, Ansible's and 'pip freeze'; each
environment's state, provider record (what was booked, and how), the hosts' facts,
backups and actions playbooks (never a private key); every result, figure and the report;
MANIFEST.json (every file's size and SHA-256, the date, the versions) and SHA256SUMS
('sha256sum -c SHA256SUMS' checks it without enos). With --campaign, the report is
written again first, and shows the archive's manifest afterwards.

Usage:
  enos archive [--env DIR] [--campaign FILE] [--results DIR] -o FILE [--format FORMAT]
  enos archive --check FILE [--format FORMAT]

Options:
  --env DIR         the environment to archive (default: the campaign's, if any; else
                    the current one, ./current)
  --campaign FILE   the campaign to archive, with its results
  --results DIR     the campaign's results directory (default: <file stem>.results beside it)
  -o FILE           the archive to write (.tar.gz)
  --check FILE      verify an archive against its manifest: exit 0 if every file matches,
                    1 (listing the differences) if not
  --format FORMAT   text or json [default: text]
"""


def archive(args, g) -> int:
    import enos.archive
    fmt = output({"--output": args["--format"]}, ("text", "json"))
    if args["--check"]:
        res = enos.archive.check(args["--check"], strict=False)
        if fmt == "json":
            data(res.to_dict(), "json")
        else:
            meta = res.manifest.meta
            out(f"{args['--check']}: {'ok' if res.ok else 'NOT OK'} — {res.files} file(s) in the manifest, "
                f"made {meta.get('created')} by enos {meta.get('enos')}")
            for p in res.problems:
                out(f"  {p}")
        return 0 if res.ok else 1
    man = enos.archive.create(args["-o"], env=args["--env"], campaign=args["--campaign"],
                              results=args["--results"])
    if fmt == "json":
        data({"archive": args["-o"], "meta": man.meta, "files": man.files}, "json")
        return 0
    out(f"{args['-o']}: {len(man.files)} file(s), {man.total_size} bytes (before compression), "
        f"made {man.meta['created']} by enos {man.meta['enos']}")
    return 0


#: name -> (usage text, function)
COMMANDS = {"archive": (ARCHIVE, archive)}
