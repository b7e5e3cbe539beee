"""LangGraph's map-reduce: a `Send` per voter to one node, answers reduced into a list, then a tally."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, TypedDict

import anthropic
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from bench.peers import answer_of, plurality, request_params


class State(TypedDict):
    text: str
    voters: int
    answers: Annotated[list[str | None], operator.add]
    winner: str | None


class VoterInput(TypedDict):
    text: str
    slot: int


@functools.cache
def client() -> anthropic.Anthropic:
    return anthropic.Anthropic(max_retries=0)


def fan_out(state: State) -> list[Send]:
    return [Send("voter", {"text": state["text"], "slot": i}) for i in range(state["voters"])]


def voter(inp: VoterInput) -> dict[str, Any]:
    return {"answers": [answer_of(client().messages.create(**request_params(inp["slot"], inp["text"])))]}


def tally(state: State) -> dict[str, Any]:
    return {"winner": plurality(state["answers"])}


def build_graph() -> Any:
    graph = StateGraph(State)
    graph.add_node("voter", voter)  # type: ignore[call-overload]  # a Send-fed node takes its own input type
    graph.add_node("tally", tally)
    graph.add_conditional_edges(START, fan_out, ["voter"])
    graph.add_edge("voter", "tally")
    graph.add_edge("tally", END)
    return graph.compile()


def vote(graph: Any, text: str, voters: int) -> str | None:
    state = graph.invoke({"text": text, "voters": voters, "answers": [], "winner": None})
    return state["winner"]
