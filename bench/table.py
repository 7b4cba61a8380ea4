"""The bench's one table: rows recorded by the bench scripts, each figure
next to its ratio against a baseline measured in the same run.

A row is one tab-separated line: part, name, value, unit, baselines (names
of rows of the same part, separated by |, empty for none) and extras
(space-separated key=value figures such as p50 and p99, each divided by
the same extra of the baseline).

    table.py hyperfine PART BASELINES JSON...   rows from hyperfine medians
    table.py load TSV                           rows from credstore-load --tsv
    table.py print RESULTS                      the table
"""

import json
import sys

UNIT_OF_EXTRA = {"p50": "ms", "p99": "ms"}


def hyperfine(part, baselines, paths):
    for path in paths:
        for result in json.load(open(path))["results"]:
            median = result["median"] * 1000
            runs = len(result["times"])
            print(f"{part}\t{result['command']}\t{median:.6f}\tms\t{baselines}\truns={runs}")


def load(path):
    """One part per mode and level; the read row's baseline is the info row."""
    lines = open(path).read().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        level = dict(zip(header, line.split("\t")))
        clients = "1 client" if level["clients"] == "1" else f"{level['clients']} clients"
        part = f"load {level['mode']}, {clients}"
        name, baseline = ("item read", "info") if level["op"] == "read" else ("info", "")
        extras = " ".join(
            f"{key}={level[column]}"
            for key, column in [("p50", "p50 ms"), ("p99", "p99 ms"), ("errors", "errors")]
        )
        print(f"{part}\t{name}\t{level['req/s']}\t/s\t{baseline}\t{extras}")


def read_rows(path):
    rows = []
    for line in open(path).read().splitlines():
        part, name, value, unit, baselines, extras = (line.split("\t") + [""] * 6)[:6]
        rows.append(
            {
                "part": part,
                "name": name,
                "value": float(value),
                "unit": unit,
                "baselines": [b for b in baselines.split("|") if b],
                "extras": dict(pair.split("=", 1) for pair in extras.split()),
            }
        )
    return rows


def figure(value, unit):
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms" and value >= 100:
        return f"{value:,.0f} ms"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.1f} {unit}"


def ratio_cell(row, by_name):
    if not row["baselines"]:
        return "baseline"
    cells = []
    for name in row["baselines"]:
        if name == row["name"]:
            cells.append("baseline")
        else:
            cells.append(f"{row['value'] / by_name[name]['value']:.2f}x {name}")
    return ", ".join(cells)


def extras_cell(row, by_name):
    baseline = by_name.get(row["baselines"][0]) if row["baselines"] else None
    cells = []
    for key, text in row["extras"].items():
        if key == "runs":
            continue
        cell = f"{key} {text}"
        unit = UNIT_OF_EXTRA.get(key)
        if unit:
            cell = f"{key} {float(text):.3f} {unit}"
            if baseline is not None and baseline is not row and key in baseline["extras"]:
                cell += f" ({float(text) / float(baseline['extras'][key]):.2f}x)"
        if key == "errors" and text != "0":
            cell += " FAILED"
        cells.append(cell)
    return "  ".join(cells)


def print_table(path):
    rows = read_rows(path)
    parts = list(dict.fromkeys(row["part"] for row in rows))
    table = [("part", "measurement", "figure", "ratio (figure / baseline figure)", "")]
    for part in parts:
        in_part = [row for row in rows if row["part"] == part]
        by_name = {row["name"]: row for row in in_part}
        for row in in_part:
            table.append(
                (
                    part,
                    row["name"],
                    figure(row["value"], row["unit"]),
                    ratio_cell(row, by_name),
                    extras_cell(row, by_name),
                )
            )
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    last_part = None
    for line in table:
        part = line[0] if line[0] != last_part else ""
        last_part = line[0]
        cells = [part.ljust(widths[0]), line[1].ljust(widths[1]), line[2].rjust(widths[2])]
        cells += [line[3].ljust(widths[3]), line[4]]
        print("  ".join(cells).rstrip())
    print(
        "figure: the median of hyperfine runs, a VmRSS, or for load rows the requests per"
        " second over the whole level (p50 and p99 are per request, ratios to the info row's)"
    )


def main():
    command, arguments = sys.argv[1], sys.argv[2:]
    if command == "hyperfine":
        hyperfine(arguments[0], arguments[1], arguments[2:])
    elif command == "load":
        load(arguments[0])
    elif command == "print":
        print_table(arguments[0])
    else:
        sys.exit(f"table.py: unknown command {command}")


if __name__ == "__main__":
    main()
