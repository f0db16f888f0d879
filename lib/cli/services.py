"""The ops room's commands: ``kafka-local``, ``redis-local``, ``spark-local``, ``monitoring-local``, ``k8s-local``
(one ``start|status|stop`` mechanism, ``lib.local.daemons.Background``), ``k8s-image`` and ``lambda-package``."""

import argparse

from lib.errors import ParameterError


def _service(args: argparse.Namespace) -> None:
    service = args.service()  # the lib.local module's BACKGROUND, imported when the command runs
    if args.action == "start":
        print(service.start(**{name: getattr(args, name) for name in args.options}).started())
    elif args.action == "stop":
        print("stopped" if service.stop() else f"no {service.what} was running")
    else:
        running = service.running()
        if not running:
            print(f"no {service.what} is running (python -m lib {service.name} start)")
            raise SystemExit(3)
        print(running.status())


def _add_service(commands, name: str, help: str, module: str, *options: tuple[str, dict]) -> None:
    """``name start|stop|status`` for ``lib.local.<module>.BACKGROUND``; ``options`` go to ``start``."""

    def service():
        import importlib

        return importlib.import_module(f"lib.local.{module}").BACKGROUND

    parser = commands.add_parser(name, help=help)
    parser.add_argument("action", choices=["start", "stop", "status"])
    names = []
    for flag, settings in options:
        names.append(parser.add_argument(flag, **settings).dest)
    parser.set_defaults(handler=_service, service=service, options=names)


def _lambda_package(args: argparse.Namespace) -> None:
    from lib.config import resolve
    from lib.local import lambda_package

    out = resolve(args.out or f"build/lambda/{args.stage}")
    folder = lambda_package.package(args.stage, resolve(args.bundle), out, pkg_format=args.pkg_format)
    unpacked = lambda_package.unpack(folder / "deployment.zip", out.parent / f".{args.stage}-unpacked")
    report = lambda_package.check_package(folder / "deployment.zip", unpacked)
    problems = report.forbidden + report.elf_problems
    print(
        f"{folder / 'deployment.zip'}: {report.zipped_bytes / 1e6:.1f} MB, {report.unzipped_bytes / 1e6:.1f} MB unzipped "
        f"(Lambda's limit 262.1 MB), {report.elf_files} ELF files; template {folder / lambda_package.TEMPLATES[args.pkg_format]}"
        + (f"; problems: {problems}" if problems else "")
    )
    if not report.ok:
        raise ParameterError(f"the package does not fit Lambda: {problems or 'too large'}")


def _k8s_image(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lib.local import images, k8s

    if args.train:  # a batch image: run by podman/docker run (k8s/README.md), not loaded into the cluster
        print(f"{images.build_train(args.tag, args.base_image)} built")
        return
    if args.redis:  # the online-store component's Redis, as a stand-in (k8s/README.md)
        image = images.redis_stand_in()
    else:
        image = images.build_api(Path(args.bundle).resolve(), args.tag, args.base_image)  # like docker build: from here
    cluster = k8s.BACKGROUND.running()
    if cluster:
        images.load(image, k8s.containerd_socket(cluster.data_dir))
    print(
        f"{image} built"
        + (
            " and loaded into the development cluster"
            if cluster
            else " (no development cluster running: python -m lib k8s-local start, then this again)"
        )
    )


def add_commands(commands) -> None:
    free = {"type": int, "default": 0}
    _add_service(
        commands, "kafka-local", "a local Apache Kafka broker (KRaft) on 127.0.0.1", "kafka",
        ("--port", {**free, "help": "broker port (default: a free one)"}),
        ("--data-dir", {"help": "storage folder (default: ~/.cache/fraud-mlops/kafka/<version>/local-data)"}),
    )  # fmt: skip
    _add_service(
        commands, "redis-local", "a local Redis on 127.0.0.1 (the online feature store)", "redis",
        ("--port", {**free, "help": "port (default: a free one)"}),
        ("--data-dir", {"help": "its folder (default: ~/.cache/fraud-mlops/redis/local-data)"}),
        ("--max-memory", {"default": "4gb", "help": "Redis maxmemory (a full store refuses writes)"}),
    )  # fmt: skip
    _add_service(
        commands, "spark-local", "a local Spark standalone cluster (master + workers) on 127.0.0.1", "spark",
        ("--workers", {"type": int, "default": 2}),
        ("--cores", {"type": int, "default": 1, "help": "cores per worker"}),
        ("--memory", {"default": "2g", "help": "memory per worker (its executors get this much)"}),
        ("--port", {**free, "help": "master port (default: a free one)"}),
    )  # fmt: skip
    _add_service(
        commands, "monitoring-local", "Debian's Prometheus + Pushgateway with the project's config and alert rules",
        "monitoring",
        ("--api", {"default": "127.0.0.1:8000", "help": "the API to scrape (python -m lib serve)"}),
        ("--scorer", {"default": "127.0.0.1:9108", "help": "the stream scorer's --metrics-port"}),
        ("--port", {"type": int, "default": 9090, "dest": "prometheus_port", "help": "Prometheus port"}),
        ("--pushgateway-port", {"type": int, "default": 9091}),
        ("--kubeconfig", {"default": "", "help": "find the API's pods on this cluster (kubernetes_sd_configs) "
                          "instead of --api (k8s-local writes prometheus.kubeconfig: read-only)"}),
    )  # fmt: skip
    _add_service(
        commands, "k8s-local", "a single-node Kubernetes built from source, on 127.0.0.1 (root; prints KUBECONFIG)",
        "k8s",
        ("--port", {**free, "help": "the API server's port (default: a free one)"}),
        ("--data-dir", {"help": "its folder (default: ~/.cache/fraud-mlops/k8s/cluster/local-data)"}),
    )  # fmt: skip

    image = commands.add_parser(
        "k8s-image", help="build the API image (k8s/Dockerfile) and load it into the running development cluster"
    )
    image.add_argument("--tag", default="latest", help="paysim-fraud-api:TAG (a new model: a new tag)")
    image.add_argument("--train", action="store_true",
                       help="build the training image instead (k8s/Dockerfile.train: paysim-fraud-train:TAG)")  # fmt: skip
    image.add_argument("--redis", action="store_true", help="the online-store component's Redis instead: a stand-in "
                       "from Debian's packages (localhost/fraud-mlops/redis:7.0-bookworm), loaded like the API image")  # fmt: skip
    image.add_argument("--bundle", default="data/bundle", help="the serving bundle the image carries (from the cwd)")
    image.add_argument("--base-image", help="default: Python 3.11 from Debian's packages (no registry needed); "
                       "python:3.11-slim where a registry is reachable")  # fmt: skip
    image.set_defaults(handler=_k8s_image)

    package = commands.add_parser(
        "lambda-package", help="chalice package under Python 3.13 (Lambda's runtime), checked against Lambda's limits"
    )
    package.add_argument("--stage", default="prod", choices=["dev", "prod"])
    package.add_argument("--bundle", default="data/bundle", help="the serving bundle the package carries")
    package.add_argument("--out", help="folder for deployment.zip and its template (default build/lambda/STAGE)")
    package.add_argument(
        "--pkg-format", default="cloudformation", choices=["cloudformation", "terraform"],
        help="the template: SAM (sam.json, the default) or Terraform (chalice.tf.json)",
    )  # fmt: skip
    package.set_defaults(handler=_lambda_package)
