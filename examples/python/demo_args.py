"""What every feature_store demo process shares: where the broker is."""

import argparse

import slither


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the broker's --runtime-dir and --namespace."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--runtime-dir", required=True, help="the broker's runtime directory")
    ap.add_argument("--namespace", required=True, help="the broker's namespace")
    return ap


def open_store(args: argparse.Namespace, name: str = "features") -> slither.Store:
    """Connects to the broker named by `args` and attaches to store `name`."""
    client = slither.connect(runtime_dir=args.runtime_dir, namespace=args.namespace)
    return client.store(name)
