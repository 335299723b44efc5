"""Model calls go to workers that hold the provider's key.

Keys never travel with jobs: each worker reads its own from its environment. So a worker
advertises the keys it holds the way it advertises any capability, by the queues it polls:
beside ``<queue>.model`` it polls ``<queue>.model.<provider>`` for each provider whose key
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``) it has. A call that needs a key goes to that
provider's queue, so a worker without the key never takes it; a call to an endpoint of the
user's (``base_url``: a self-hosted or proxy server, which may need no key) goes to
``<queue>.model``, which every worker polls.

Before the first call to a provider's queue, one look at its pollers (``describe_task_queue``,
the same check capability routing makes) fails the step at once, naming the missing key, when
no worker has it, instead of leaving the call waiting for a worker that will never come.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.core import names
from agentparallels.workflows._call import call

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.errors import NO_CAPABILITY
    from agentparallels.core.llm import KEY_VARIABLES, ModelRequest
    from agentparallels.core.messages import PollersInput, QueuePollers

MODEL_CAPABILITY = names.MODEL_CAPABILITY
"""Model calls run on ``<queue>.model`` of the workflow's queue, where a worker can rate-limit
them (``agentparallels worker --model-calls-per-second``)."""
PATCH = "model-call-queue-per-credential"
"""Guards the change from ``<queue>.model`` for every call to a queue per credential."""
GRACE_S = 2.0
"""How long, in seconds, the check waits for a key holder to show up (a worker starting)."""


def credential_queue(model_queue: str, provider: str) -> str:
    """Where the workers holding ``provider``'s key take model calls: ``<model_queue>.<p>``."""
    return f"{model_queue}.{provider}"


def needs_key(req: ModelRequest) -> str | None:
    """The provider whose key ``req`` needs on the worker; None for an endpoint of the user's
    (any worker may call it, with the key if it has one) or a malformed model name (the call
    itself reports that)."""
    provider = req.model.partition(":")[0]
    return provider if req.base_url is None and provider in KEY_VARIABLES else None


async def route(model_queue: str | None, req: ModelRequest, checked: set[str]) -> str | None:
    """The queue ``req`` runs on, given the workflow's queue for model calls (None: the
    workflow's own queue, whose ``.model`` queue then holds the queues per credential); fails
    naming the key when no worker holding it polls that queue (looked at once per queue in
    ``checked``)."""
    provider = needs_key(req)
    if provider is None:
        return model_queue
    if model_queue is None:
        model_queue = f"{workflow.info().task_queue}.{MODEL_CAPABILITY}"
    queue = credential_queue(model_queue, provider)
    if queue not in checked:
        found: tuple[QueuePollers, ...] = await call(
            steps.POLLERS,
            PollersInput(task_queues=(queue,), grace_s=GRACE_S, activity=True),
            summary=f"check a worker holds {KEY_VARIABLES[provider]}",
        )
        if not found[0].activity_pollers:
            raise missing_key(model_queue, provider, req)
        checked.add(queue)
    return queue


def missing_key(model_queue: str, provider: str, req: ModelRequest) -> ApplicationError:
    variable = KEY_VARIABLES[provider]
    base = model_queue.rsplit(".", 1)[0]
    return ApplicationError(
        f"no worker with {variable} polls {credential_queue(model_queue, provider)}, so none "
        f"can make the model call '{req.step}' ({req.model}): set {variable} in the "
        f"environment of a worker of this job (`agentparallels worker --task-queue {base}`, "
        "or the command that runs the job); keys never travel with jobs",
        type=NO_CAPABILITY,
        non_retryable=True,
    )


__all__ = [
    "GRACE_S",
    "MODEL_CAPABILITY",
    "PATCH",
    "credential_queue",
    "missing_key",
    "needs_key",
    "route",
]
