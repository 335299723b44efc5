"""A reusable agent loop: model turns with feedback steps, compacted, continued as new.

Each turn is one recorded model call (``ModelSteps.ask``) followed by a feedback step: a tool
command run on the answer (an activity), feedback sent to the workflow by signal, or a fixed
next prompt. Before every call the conversation is measured and, past the compaction
threshold, its oldest turns are replaced by a summary (``workflows/compaction.py``). When the
server suggests it, or this run's history passes ``max_run_events`` / ``max_run_bytes``, the
loop continues as new at the next turn boundary, handing the next run its compacted
conversation, its counters and what it has spent; so a loop of any length keeps every run's
history bounded, and budgets hold across the whole chain.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from agentparallels.core import names
from agentparallels.workflows._call import call
from agentparallels.workflows.compaction import compact, context_tokens
from agentparallels.workflows.model_step import ModelSteps
from agentparallels.workflows.shard import BUG_TYPES

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.agent import (
        AgentLoopInput,
        AgentLoopProgress,
        AgentLoopResult,
        AgentLoopState,
        ToolInput,
    )
    from agentparallels.core.llm import Message, ModelRequest

FEEDBACK_SIGNAL = names.FEEDBACK_SIGNAL
"""Signal carrying text for the agent's next user message."""


def first_conversation(inp: AgentLoopInput) -> tuple[Message, ...]:
    system = (Message(role="system", content=inp.system),) if inp.system else ()
    return (*system, Message(role="user", content=inp.task))


@workflow.defn(name=names.AGENT_LOOP, failure_exception_types=BUG_TYPES)
class AgentLoopWorkflow:
    def __init__(self) -> None:
        self._state = AgentLoopState(conversation=())
        self._feedback: list[str] = []
        self._turns = 0
        self._steps = ModelSteps()

    @workflow.signal(name=FEEDBACK_SIGNAL)
    def feedback(self, text: str) -> None:
        self._feedback.append(text)

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> AgentLoopProgress:
        return AgentLoopProgress(
            turn=self._state.turn,
            turns=self._turns,
            runs=self._state.runs,
            compactions=self._steps.compactions,
            tokens=self._steps.total.total,
            context_tokens=context_tokens(self._state.conversation),
        )

    @workflow.run
    async def run(self, inp: AgentLoopInput) -> AgentLoopResult:
        self._turns = inp.turns
        self._state = inp.state or AgentLoopState(conversation=first_conversation(inp))
        self._feedback = [*self._state.feedback, *self._feedback]
        self._steps = model_steps = ModelSteps(inp.budget, inp.prices, self._state.steps)
        conversation = self._state.conversation
        turn = self._state.turn
        answer = self._state.last_answer
        while turn < inp.turns:
            if self._history_full(inp):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    inp.model_copy(update={"state": self._carry(conversation, turn, answer)})
                )
            conversation = await compact(
                model_steps,
                conversation,
                model=inp.model,
                base_url=inp.base_url,
                policy=inp.compaction,
            )
            self._update(conversation, turn, answer)
            reply = await model_steps.ask(
                ModelRequest(
                    model=inp.model,
                    base_url=inp.base_url,
                    messages=conversation,
                    max_tokens=inp.max_tokens,
                    step=f"turn {turn + 1}",
                )
            )
            answer = reply.text
            turn += 1
            conversation = (*conversation, Message(role="assistant", content=answer))
            if turn == inp.turns or (inp.done_marker and inp.done_marker in answer):
                break
            conversation = (
                *conversation,
                Message(role="user", content=await self._next_message(inp, answer)),
            )
            self._update(conversation, turn, answer)
        self._update(conversation, turn, answer)
        return AgentLoopResult(
            turns=turn,
            runs=self._state.runs,
            compactions=model_steps.compactions,
            usage=model_steps.total,
            cost_usd=model_steps.cost_usd,
            last_answer=answer,
        )

    async def _next_message(self, inp: AgentLoopInput, answer: str) -> str:
        if inp.tool_cmd:
            done = await call(
                steps.RUN_TOOL,
                ToolInput(
                    command=inp.tool_cmd,
                    workdir=inp.workdir,
                    answer=answer,
                    timeout_s=inp.tool_timeout_s,
                    sandbox=inp.sandbox,
                ),
                summary=f"tool: {inp.tool_cmd[:60]}",
                start_to_close_timeout=timedelta(seconds=inp.tool_timeout_s + 60),
            )
            return f"`{inp.tool_cmd}` exited {done.exit_code}:\n{done.output.strip()}"
        if self._feedback:
            text = "\n\n".join(self._feedback)
            self._feedback.clear()
            return text
        return inp.next_prompt

    def _history_full(self, inp: AgentLoopInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= inp.max_run_events
            or info.get_current_history_size() >= inp.max_run_bytes
        )

    def _carry(self, conversation: tuple[Message, ...], turn: int, answer: str) -> AgentLoopState:
        return AgentLoopState(
            conversation=conversation,
            turn=turn,
            runs=self._state.runs + 1,
            steps=self._steps.state(),
            feedback=tuple(self._feedback),
            last_answer=answer,
        )

    def _update(self, conversation: tuple[Message, ...], turn: int, answer: str) -> None:
        self._state = self._state.model_copy(
            update={"conversation": conversation, "turn": turn, "last_answer": answer}
        )
        workflow.set_current_details(
            f"**turn {turn}/{self._turns}** (run {self._state.runs}): "
            f"{self._steps.total.total} tokens, {self._steps.compactions} compactions"
        )


__all__ = ["AgentLoopWorkflow", "FEEDBACK_SIGNAL", "first_conversation"]
