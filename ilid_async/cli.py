"""The commands: run, status, download, stats, shop check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from pathlib import Path

from ilid_async import reasons
from ilid_async.config import STAGES, Config, HttpSettings, ImageSettings, SettingError, check_setting, load_config, load_shop
from ilid_async.errors import ItemError, UserError

__all__ = ["build_parser", "FETCHING_STAGES", "run_with_demo", "run_event_loop", "main"]


def _stages(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stage {unknown[0] if unknown else '(none)'}; choose from {', '.join(STAGES)}")
    return names


def _setting(cls: type, key: str, parse: type):
    """An argparse type for a flag that stands for setting ``key`` of ``cls``: the flag keeps the
    setting's bounds, so `--concurrency 0` is refused as `concurrency = 0` in a config is."""

    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {parse.__name__} value: {text!r}") from None
        try:
            return check_setting(cls, key, value)
        except SettingError as e:
            raise argparse.ArgumentTypeError(e.problem) from None

    return check


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ilid-async", description="Crawl web shops into a labelled language-image dataset.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (all stages, or those named with --stages)")
    run.add_argument("config", help="config.toml")
    run.add_argument("--stages", type=_stages, default=list(STAGES),
                     help=f"comma-separated stages to run: {','.join(STAGES)} (default: all). "
                          "crawl = sitemaps, pages, pre-filter; label = LLM, post-filter, assemble")
    run.add_argument("--replace-images", action="store_true", help="re-download existing images")
    run.add_argument("--recrawl", action="store_true",
                     help="fetch every page again (by default a new run after a finished crawl fetches "
                          "only new pages and pages whose sitemap lastmod is newer than our copy)")

    run.add_argument("--progress-interval", type=_seconds, default=10.0, metavar="SECONDS",
                     help="seconds between progress lines when stderr is not a terminal (a terminal "
                          "gets a live display); 0 = no progress (default %(default)s)")

    status = sub.add_parser("status", help="per-stage and per-host counts of a run (also while it runs)")
    status.add_argument("config", help="config.toml")

    dl = sub.add_parser("download", help="download and resize the images of an ILID dataset file")
    dl.add_argument("--dataset", required=True, help="dataset JSON file (ILID format)")
    dl.add_argument("--folder", required=True, help="images folder")
    images, http = ImageSettings(), HttpSettings()
    dl.add_argument("--image_width", type=_setting(ImageSettings, "width", int), default=images.width)
    dl.add_argument("--image_height", type=_setting(ImageSettings, "height", int), default=images.height)
    dl.add_argument("--replace", action="store_true", help="download images that already exist")
    dl.add_argument("--dataset-downloaded", "--dataset_downloaded", dest="dataset_downloaded",
                    help="write the entries whose image exists here (default: rewrite --dataset)")
    dl.add_argument("--concurrency", type=_setting(HttpSettings, "concurrency", int),
                    default=http.concurrency,
                    help="requests in flight over all hosts (default %(default)s)")
    dl.add_argument("--per-host-rate", type=_setting(HttpSettings, "per_host_rate", float),
                    default=http.per_host_rate,
                    help="requests per second to one host (0 = no limit; default %(default)s)")
    dl.add_argument("--per-host-concurrency", type=_setting(HttpSettings, "per_host_concurrency", int),
                    default=http.per_host_concurrency,
                    help="requests in flight to one host (default %(default)s)")
    dl.add_argument("--allow-loopback", action="store_true",
                    help="allow image URLs on 127.0.0.0/8 (local test shops)")
    dl.add_argument("--format", type=_setting(ImageSettings, "format", str), default=images.format,
                    metavar="{png,jpeg,webp}",
                    help="image format (default %(default)s). png writes each entry's `image` path as "
                         "it is; jpeg and webp write it with its ending (.png, .jpg, .jpeg, .webp) "
                         "replaced by .jpg / .webp (added when it has none), and the downloaded "
                         "dataset's `image` values name those files")
    dl.add_argument("--png-compress-level", type=_setting(ImageSettings, "png_compress_level", int),
                    default=images.png_compress_level, metavar="0..9",
                    help="PNG zlib level: 1 is several times faster, files ~15%% larger "
                         "(default %(default)s)")
    dl.add_argument("--quality", type=_setting(ImageSettings, "quality", int), default=images.quality,
                    metavar="1..100", help="JPEG and WebP quality (default %(default)s)")
    dl.add_argument("--workers", type=_setting(ImageSettings, "workers", int), default=images.workers,
                    help="processes that decode, resize and encode; 0 = number of cores "
                         "(default %(default)s)")
    dl.add_argument("--progress-interval", type=_seconds, default=10.0, metavar="SECONDS",
                    help="seconds between progress lines on stderr when it is not a terminal (a "
                         "terminal gets a live line); 0 = no progress (default %(default)s)")

    stats = sub.add_parser("stats", help="dataset numbers, word-frequency charts and an HTML report")
    stats.add_argument("source", help="config.toml (its run's dataset) or a dataset JSON file")
    stats.add_argument("--out", help="report folder (default: report/ beside the dataset file)")
    stats.add_argument("--images", help="images folder (default: images/ beside the dataset file)")
    stats.add_argument("--sample", type=int, default=24, help="images in the report's sample grid "
                                                              "(default %(default)s)")

    shop = sub.add_parser("shop", help="tools for writing shop files")
    shop_sub = shop.add_subparsers(dest="shop_command", required=True)
    check = shop_sub.add_parser(
        "check", help="what a shop file finds on one page (exit 0: a record that passes the "
                      "pre-filter; 1: no record; 2: user error)")
    check.add_argument("shop", help="shops/NAME.toml")
    check.add_argument("page", help="page URL (fetched like the crawl does) or a saved HTML file")
    check.add_argument("--url", help="for a saved file: the page's URL, for resolving relative links "
                                     "(default: the file's file:// URL)")
    check.add_argument("--config", help="take the [http] settings from this config.toml "
                                        "(default: the built-in defaults)")
    check.add_argument("--allow-loopback", action="store_true",
                       help="allow page URLs on 127.0.0.0/8 (local test shops)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from ilid_async.run.pipeline import Pipeline
    from ilid_async.run.summary import format_summary

    cfg = load_config(args.config)
    pipeline = Pipeline(cfg, args.stages, replace_images=args.replace_images, recrawl=args.recrawl,
                        progress_interval=args.progress_interval)
    try:
        run_event_loop(run_with_demo(pipeline, cfg, args.stages))
        print(format_summary(pipeline.store.queries))
        if "dataset" in args.stages:
            print(f"dataset: {cfg.dataset_path}  images: {cfg.images_dir}")
    finally:
        pipeline.store.close()
    if pipeline.interrupted:
        print("stopped before the work was done; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


# The stages that fetch from shops: only they need the demo shop served.
FETCHING_STAGES = frozenset({"crawl", "images"})


async def run_with_demo(pipeline, cfg: Config, stages) -> None:
    """Run ``pipeline``, serving the demo shop around it when the config enables it and a
    stage fetches (`run --stages label,dataset` starts no server, and so cannot fail on a port
    another demo run holds)."""
    demo = cfg.demo
    if not demo.enabled or not FETCHING_STAGES & set(stages):
        await pipeline.run()
        return
    from ilid_async.demo.server import start_demo_server

    try:
        server = await start_demo_server(demo.host, demo.port, demo.products, demo.seed)
    except OSError as e:
        raise UserError(f"{cfg.path}: key 'demo.port': cannot serve the demo shop on "
                        f"{demo.host}:{demo.port} ({e.strerror})") from None
    try:
        pipeline.use_demo_shop(server.base_url)
        await pipeline.run()
    finally:
        await server.close()


def _status(args: argparse.Namespace) -> int:
    from ilid_async.run.summary import format_summary
    from ilid_async.run.store import Store

    cfg = load_config(args.config)
    if not cfg.store_path.exists():
        raise UserError(f"{cfg.store_path}: no run state yet (run `ilid-async run {args.config}` first)")
    store = Store(cfg.store_path, readonly=True)
    try:
        print(format_summary(store.queries))
    finally:
        store.close()
    return 0


def _download(args: argparse.Namespace) -> int:
    from ilid_async.images.transform import Encoding, image_pool
    from ilid_async.workers import RestartingPool

    # The image workers start first: they load their libraries while this process loads the
    # HTTP client and reads the dataset file (a quarter of a second each on 2 cores).
    pool = RestartingPool(lambda: image_pool(args.workers))
    try:
        from ilid_async.run.download import download_dataset

        settings = HttpSettings(concurrency=args.concurrency, allow_loopback=args.allow_loopback,
                                per_host_rate=args.per_host_rate, per_host_concurrency=args.per_host_concurrency)
        encoding = Encoding(args.format, args.png_compress_level, args.quality)
        report = run_event_loop(download_dataset(
            args.dataset, args.folder, width=args.image_width, height=args.image_height,
            replace=args.replace, dataset_downloaded=args.dataset_downloaded, http_settings=settings,
            encoding=encoding, progress_interval=args.progress_interval, pool=pool))
    finally:
        pool.shutdown(cancel_futures=True)
    failed = ", ".join(f"{k} {v}" for k, v in sorted(report.failed.items())) or "-"
    print(f"entries {report.total}, downloaded {report.downloaded}, "
          f"kept existing {report.skipped_existing}, failed: {failed}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from ilid_async.output.dataset import read_dataset
    from ilid_async.output.report_html import write_report
    from ilid_async.output.stats import compute_stats, format_stats

    source = Path(args.source)
    if source.suffix == ".toml":
        cfg = load_config(source)
        dataset, images, store_path = cfg.dataset_path, cfg.images_dir, cfg.store_path
    else:  # a dataset file alone has no page text, so no label-quality lines
        dataset, images, store_path = source, source.parent / "images", None
    images = Path(args.images) if args.images else images
    out = Path(args.out) if args.out else dataset.parent / "report"
    try:
        entries = read_dataset(dataset)
    except FileNotFoundError:
        raise UserError(f"{dataset}: dataset file not found") from None
    except ValueError as e:  # read_dataset's message names the file
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{dataset}: cannot read dataset file ({e.strerror})") from None
    stats = compute_stats(entries)
    print(f"dataset: {dataset}")
    print(format_stats(stats))
    if store_path is not None and store_path.is_file():
        from ilid_async.run.summary import label_quality_lines
        from ilid_async.run.store import Store

        store = Store(store_path, readonly=True)
        try:
            lines = label_quality_lines(store.queries)
        finally:
            store.close()
        if lines:
            print("\n" + "\n".join(lines))
    try:
        index = write_report(out, stats, entries, dataset_path=dataset, images_dir=images, sample=args.sample)
    except OSError as e:
        raise UserError(f"{out}: cannot write the report ({e.strerror})") from None
    print(f"\nreport: {index}")
    return 0


def _shop_check(args: argparse.Namespace) -> int:
    from ilid_async.crawl.shop_check import check_page, fetch_page, format_check

    shop = load_shop(Path(args.shop))
    charset = None
    if args.page.startswith(("http://", "https://")):
        if args.url:
            raise UserError("--url is for saved pages; give the page URL alone")
        settings = load_config(args.config).http if args.config else HttpSettings()
        if args.allow_loopback:
            settings = settings.replace(allow_loopback=True)
        try:
            page_url, body, charset = run_event_loop(fetch_page(shop, args.page, settings))
        except ItemError as e:
            if e.reason == reasons.ADDRESS_REFUSED:
                raise UserError(f"{args.page}: {e.detail}; --allow-loopback allows 127.0.0.0/8, "
                                "http.allow_private in a --config file private networks") from None
            print(f"page: {args.page}\n\nno record: the page cannot be fetched ({e.reason}), "
                  "the crawl would record it as failed")
            return 1
    else:
        path = Path(args.page)
        try:
            body = path.read_bytes()
        except OSError as e:
            raise UserError(f"{path}: cannot read saved page ({e.strerror})") from None
        page_url = args.url or path.resolve().as_uri()
    check = check_page(shop, body, page_url, charset)
    print(format_check(check))
    return 0 if check.yields_record else 1


def run_event_loop(coro):
    try:
        import uvloop
    except ImportError:  # uvloop is not on every platform; asyncio's loop works too
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"run": _run, "status": _status, "download": _download, "stats": _stats,
                "shop": _shop_check}
    try:
        return handlers[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
