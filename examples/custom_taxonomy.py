"""Your own taxonomy file: write it, load it, get targets and costs in your model's class order.

Writes a CSV edge list and a path-per-line text file of the same small tree
(with a DAG node and a single-child chain, to show the policies), loads both,
checks they agree, and builds the soft-target and cost matrices in a given
class order.

Run::

    python examples/custom_taxonomy.py                  # files in a temporary folder
    python examples/custom_taxonomy.py --out my_files   # keep the files
    python examples/custom_taxonomy.py --quick          # the same (it is already fast)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import taxosmooth as ts

CSV_TEXT = """\
parent,child
vehicle,road vehicle
vehicle,watercraft
road vehicle,car
road vehicle,bicycle
car,sedan
car,taxi
bicycle,road bike
bicycle,mountain bike
watercraft,sailboat
watercraft,motorboat
# a DAG: an amphibious car is both a car and a watercraft
car,amphibious car
watercraft,amphibious car
"""

PATHS_TEXT = """\
# one root-to-leaf path per line; a class is the last name of its line
vehicle/road vehicle/car/sedan
vehicle/road vehicle/car/taxi
vehicle/road vehicle/bicycle/road bike
vehicle/road vehicle/bicycle/mountain bike
vehicle/watercraft/sailboat
vehicle/watercraft/motorboat
vehicle/aircraft/fixed-wing/airliner
"""


def run(folder: Path, beta: float) -> None:
    csv_path, txt_path = folder / "vehicles.csv", folder / "vehicles.txt"
    csv_path.write_text(CSV_TEXT, encoding="utf-8")
    txt_path.write_text(PATHS_TEXT, encoding="utf-8")
    print(f"wrote {csv_path} and {txt_path}\n")

    # 1. The CSV has a node with two parents: the default policy refuses it, naming the node.
    try:
        ts.Taxonomy.load(csv_path)
    except ts.MultipleParentsError as exc:
        print("default policy (multiple_parents='error'):\n  ", exc, "\n")
    tax_csv = ts.Taxonomy.load(csv_path, multiple_parents="first")
    print(tax_csv.describe(), "\n")

    # 2. The path file has a single-child chain (aircraft -> fixed-wing -> airliner).
    tax_txt = ts.Taxonomy.load(txt_path)
    contracted = ts.Taxonomy.load(txt_path, contract_unary=True)
    print("path file, default class order (order of first appearance):", tax_txt.classes)
    print("depth of 'airliner':", tax_txt.depth("airliner"), "-> with contract_unary:", contracted.depth("airliner"))
    print("contract_unary report:", contracted.report, "\n")

    # 3. The model's class order: pass `classes=` (the rows/columns of every matrix follow it).
    order = ["taxi", "sedan", "mountain bike", "road bike", "motorboat", "sailboat", "airliner"]
    tax = ts.Taxonomy.load(txt_path, classes=order)
    assert tax.classes == tuple(order)
    q = ts.soft_targets(tax, beta=beta)
    cost = ts.cost_matrix(tax, transform="normalize")
    d = ts.class_distances(tax, "lca_height")
    print(f"soft targets (beta={beta:g}), row 'taxi':", {c: round(float(v), 3) for c, v in zip(order, q[0])})
    print("normalised costs, row 'taxi':      ", {c: round(float(v), 3) for c, v in zip(order, cost[0])})
    assert d[0, 1] < d[0, 2] < d[0, 6]  # taxi-sedan < taxi-bike < taxi-airliner

    # 4. Save the matrices for a training script that does not import taxosmooth.
    np.save(folder / "targets.npy", q.numpy())
    np.save(folder / "costs.npy", cost.numpy())
    (folder / "classes.txt").write_text("\n".join(order) + "\n", encoding="utf-8")

    # 5. Round trip: save() writes a file load() reads back into an equal taxonomy.
    tax.save(folder / "vehicles_saved.json")
    assert ts.Taxonomy.load(folder / "vehicles_saved.json") == tax
    print(f"\nwrote targets.npy, costs.npy, classes.txt and vehicles_saved.json to {folder}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write, load and use a taxonomy file (CSV and path-per-line).")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temporary one)")
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity; this example is already quick")
    args = parser.parse_args(argv)
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.beta)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.out, args.beta)


if __name__ == "__main__":
    main()
