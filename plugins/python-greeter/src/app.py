"""python-greeter: an example Ferry transformer plugin in Python (world `output-transformer`).

- On the first output of a session it greets the user by first name ("Hi Ana!") before the flow's
  messages, once per session (remembered in the session storage as {"greeted": true}).
- It turns `choices` in an output's data into Messenger quick replies.

The logic lives in greeter.py; this module only binds it to the WIT interfaces.
"""

import greeter
import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, session_storage
from wit_world.imports.ferry_transformer_types import (
    OutputContext,
    OutputDecision,
    OutputDecision_Send,
    OutputDecision_SendDefault,
)


class WitWorld(wit_world.WitWorld):
    """The world exports no functions of its own, only the `output` interface below."""


def _greet(context: OutputContext) -> bool:
    """Runs the once-per-session greeting step. True when the user is to be greeted now."""
    state, usable = greeter.parse_state(session_storage.get())
    if not usable or state is None:
        log.log(log.Level.WARN, "session storage holds something that is not a JSON object; not greeting")
        return False
    if not greeter.needs_greeting_step(state):
        return False
    name = greeter.first_name(context.profile)
    # Mark the step as done even without a name: the greeting belongs to the first output only.
    state[greeter.GREETED_KEY] = name is not None
    try:
        session_storage.set(greeter.to_json(state))
    except Err as e:
        # Without the mark every later output would greet again: better not to greet at all.
        log.log(log.Level.WARN, "could not store the greeting mark (%s); not greeting" % e.value)
        return False
    if name is None:
        log.log(log.Level.INFO, "first output of the session, but no first name in the profile: no greeting")
    return name is not None


class Output(exports.Output):
    def handle_output(self, context: OutputContext) -> OutputDecision:
        try:
            return _handle_output(context)
        except Err:
            raise
        except Exception as e:
            # An uncaught exception would trap the instance; report it as the hook's error instead.
            raise Err("python-greeter failed: %s: %s" % (type(e).__name__, e))


def _handle_output(context: OutputContext) -> OutputDecision:
    messages = list(context.messages)
    done = []

    replies, problems = greeter.quick_replies(context.output.data)
    for problem in problems:
        log.log(log.Level.WARN, "choices: " + problem)
    if replies:
        messages, what = greeter.attach_quick_replies(messages, replies)
        done.append(what)

    if _greet(context):
        messages.insert(0, greeter.greeting_message(greeter.first_name(context.profile)))
        done.append("greeted the user (first output of the session)")

    if not done:
        return OutputDecision_SendDefault()
    log.log(log.Level.INFO, "; ".join(done))
    return OutputDecision_Send(messages)
