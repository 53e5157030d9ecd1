"""mfe-deploy notify test: one test event to every webhook of the environment, and what each answered."""

from __future__ import annotations

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application

notify_app = typer.Typer(help="Webhook notifications (notify: in the environment).", rich_markup_mode=None, cls=Verbs)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def test(env: EnvOption, as_json: JsonOption = False) -> None:
    """Send a test event to every webhook; exit 1 when one did not take it."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.notify import Event

    state = application()
    notifier = state.notifier(env)
    if notifier is None:
        raise MfeError(f"{env} has no webhooks (notify.webhooks in its environment file)")
    notifier.notify(Event("test", env, f"a test notification from mfe-deploy for {env}"))
    notifier.drain()
    failed = [index for index, _, delivered in notifier.results if not delivered]
    if as_json:
        rows = [
            {"webhook": index + 1, "format": notifier.hooks[index].fmt, "delivered": delivered}
            for index, _, delivered in sorted(notifier.results)
        ]
        state.console.json(rows)
    for index, _, delivered in sorted(notifier.results) if not as_json else []:
        state.console.print(
            f"webhook {index + 1} ({notifier.hooks[index].fmt}): {'delivered' if delivered else 'FAILED'}"
        )
    if failed or len(notifier.results) < len(notifier.hooks):
        raise MfeError(
            f"{len(notifier.hooks) - len(notifier.results) + len(failed)} webhook(s) did not take the test event"
        )
