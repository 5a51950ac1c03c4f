"""The ``agegender`` command line.

Service subcommands get one ``--option`` per field of their config model (generated, so
the CLI cannot drift from the config); an option given on the command line overrides the
environment variable, which overrides the default. Heavy imports (TensorFlow, OpenCV) are
done inside each subcommand so ``agegender --help`` is fast.
"""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import click
from pydantic_settings import BaseSettings

#: subcommand -> (config class "module:Class", entry point "module:function")
SERVICES = {
    "capture": ("services.capture.config:CaptureConfig", "services.capture.main:main"),
    "detector": ("services.detector.config:DetectorConfig", "services.detector.main:main"),
    "classifier": ("services.classifier.config:ClassifierConfig",
                   "services.classifier.main:main"),
    "sink": ("services.sink.config:SinkConfig", "services.sink.main:main"),
}


def load(ref: str):
    """Import ``"module:attr"`` and return the attribute."""
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _click_type(annotation):
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False
    if origin in (list, tuple):
        return str, True
    if origin is typing.Union and args:
        return _click_type(args[0])
    if annotation is bool:
        return click.BOOL, False
    if annotation in (int, float, str):
        return annotation, False
    if annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return click.Path(path_type=Path), False
    return str, False


def config_options(config_cls: type[BaseSettings]):
    """Decorator adding ``--field-name`` options for every field of ``config_cls``.

    List fields become repeatable options (``--sources a --sources b``); booleans take
    ``true``/``false``. Options default to ``None`` (= not given) so the environment and
    defaults stay in charge unless the user overrides them.
    """
    def decorate(func):
        """Add the generated options to the click command ``func``."""
        for name, field in reversed(list(config_cls.model_fields.items())):
            ctype, multiple = _click_type(field.annotation)
            default = field.default if field.default_factory is None else field.default_factory()
            env = f"{config_cls.model_config.get('env_prefix', '')}{name}".upper()
            help_text = f"{field.description} [default: {default!r}; env: {env}]"
            func = click.option(f"--{name.replace('_', '-')}", name, type=ctype,
                                multiple=multiple, default=None, help=help_text)(func)
        return func
    return decorate


def build_config(config_cls: type[BaseSettings], options: dict):
    """Instantiate ``config_cls`` from the CLI options that were actually given.

    Raises:
        click.BadParameter: the values fail validation (the message names the field and
            shows no credential).
    """
    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
             if v is not None and v != ()}
    from common.redact import redact
    try:
        return config_cls(**given)
    except Exception as exc:  # pydantic.ValidationError: show it as a usage error
        # the configs hide input values in their errors; a message may still quote one
        raise click.BadParameter(redact(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agegender")
def main():
    """Real-time face detection with age and gender estimation."""


class _ServiceCommand(click.Command):
    """A service's command: click's own usage errors (an option that is not a number, an
    unknown option) are also its exit reason, so ``agegender run`` names them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """click's parsing; a usage error is written as the exit reason, then raised.

        Raises:
            click.UsageError: as click raises it (exit code 2).
        """
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            from common.process import write_exit_reason
            write_exit_reason(exc.format_message(), refused=True)
            raise


def _service_command(name: str, config_ref: str, entry_ref: str):
    config_cls = load(config_ref)

    @main.command(name=name, cls=_ServiceCommand, help=f"Run the {name} service (one process). "
                                  f"{config_cls.__doc__ or ''}")
    @config_options(config_cls)
    def command(**options):
        """Build the config from the given options and run the service; exits with its code.

        A configuration that fails validation is a usage error (exit code 2, see
        :data:`common.process.EXIT_CONFIG`); its message is also the exit reason.
        """
        from common.process import EXIT_CONFIG, Refused, exit_process, write_exit_reason
        try:
            cfg = build_config(config_cls, options)
        except click.BadParameter as exc:
            write_exit_reason(exc.format_message(), refused=True)
            raise
        try:
            code = load(entry_ref)(cfg) or 0
        except Refused:  # logged and written as the exit reason already
            code = EXIT_CONFIG
        # os._exit after main cleaned up: skips TensorFlow's 2-3 s interpreter teardown
        exit_process(code)

    return command


for _name, (_cfg, _entry) in SERVICES.items():
    _service_command(_name, _cfg, _entry)


@main.group(name="keys")
def keys():
    """ZeroMQ CURVE keys for encrypted, authenticated TCP between the services."""


@keys.command(name="generate")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="A client key pair to make (repeatable); default: capture, detector, "
                   "classifier, sink.")
@click.option("--force", is_flag=True, help="Replace key files that exist.")
def keys_generate(folder: Path, clients: tuple[str, ...], force: bool):
    """Write a CURVE key set to FOLDER with zmq.auth: the server's key pair, one client
    key pair per service, and FOLDER/authorized/ with the clients' public keys; then print
    which setting takes which file (docs/deploy.md, Security)."""
    from common.curve import DEFAULT_CLIENTS, generate_keys
    try:
        made = generate_keys(folder, tuple(clients) or DEFAULT_CLIENTS, force=force)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    names = [n for n in made if n not in ("server", "server_public", "authorized")]
    click.echo(f"CURVE keys written to {folder} (secret files: mode 0600). Settings:\n"
               f"  services that bind TCP:    *_CURVE_SERVER_SECRET_KEY={made['server']}\n"
               f"                             *_CURVE_AUTHORIZED_KEYS={made['authorized']}\n"
               f"  services that connect TCP: *_CURVE_SERVER_KEY={made['server_public']}\n"
               + "".join(f"    {n}: AGEGENDER_{n.upper()}_CURVE_CLIENT_SECRET_KEY={made[n]}\n"
                         for n in names)
               + "Keep the *.key_secret files secret; a client is revoked by deleting its "
                 "public key from authorized/ and restarting the binders.")


def _lazy(name: str, ref: str, help_text: str, group: click.Group = main):
    """Register a subcommand of ``group`` whose click command object lives in another
    module.

    The module is imported only when the subcommand runs or its help is shown.
    """
    class Lazy(click.Command):
        """A click command that imports its real implementation only when used."""
        def _real(self) -> click.Command:
            return load(ref)

        def get_params(self, ctx):
            """Parameters of the real command."""
            return self._real().get_params(ctx)

        def get_help(self, ctx):
            """Help text of the real command."""
            return self._real().get_help(ctx)

        def invoke(self, ctx):
            """Run the real command."""
            return self._real().invoke(ctx)

        def make_context(self, info_name, args, parent=None, **extra):
            """Parse arguments with the real command."""
            return self._real().make_context(info_name, args, parent=parent, **extra)

    group.add_command(Lazy(name, help=help_text))


@main.group()
def detectors():
    """Face detectors: the detector study (docs/detectors.md)."""


_lazy("run", "services.orchestrator.command:command",
      "Run the whole stack (four processes over ipc://) with progress and a summary.")
_lazy("predict", "services.predict:command",
      "One-shot: image files or folders -> one JSON object per face on stdout.")
_lazy("train", "training.cli:train_command", "Train an age/gender model (seed or compact).")
_lazy("evaluate", "training.cli:evaluate_command",
      "Evaluate a model on a UTKFace-named folder: MAE, accuracy, per-band, latency.")
_lazy("export", "training.cli:export_command",
      "Export a model folder to ONNX (checked against Keras) or a TF SavedModel.")
_lazy("prepare", "training.cli:prepare_command",
      "Prepare a dataset: detect and crop faces, split 80/10/10, cache arrays.")
_lazy("compare", "services.detector.compare:compare_command",
      "Compare face detectors on clips: faces per frame against ground_truth.json, frames "
      "with all faces, false positives, ms per frame on one core, smallest face.",
      group=detectors)


if __name__ == "__main__":
    main()
