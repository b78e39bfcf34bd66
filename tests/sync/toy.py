"""A toy domain for the sync engine's tests: tickets (a status, a shared title, a crew)
and append-only notes, with their mutators and loaders. Imported once, always as
`tests.sync.toy`. Its tables live on their own metadata, never on `SQLModel.metadata`,
so that nothing the server migrates or compares ever sees them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from sqlalchemy import Engine, func
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from server.db import write_session
from sync import (
    Applied,
    MutationContext,
    Mutator,
    MutatorRegistry,
    Rejected,
    SyncChange,
    SyncClient,
    SyncConflict,
    SyncEngine,
    SyncIdentity,
    SyncMutation,
    SyncRejection,
    check_transition,
    ensure_identity,
    optimistic_text,
    record_change,
    server_owned,
)

STATES = {"new": {"assigned", "cancelled"}, "assigned": {"en_route", "cancelled"},
          "en_route": {"completed", "cancelled"}, "completed": set(), "cancelled": set()}


class Toy(SQLModel, registry=registry()):
    pass


class ToyTicket(Toy, table=True):
    __tablename__ = "toy_ticket"

    id: str = Field(primary_key=True, max_length=64)
    title: str = ""
    title_version: int = 1  # the version at which the title last changed
    status: str = "new"
    crew: str = ""
    version: int = 1


class ToyNote(Toy, table=True):
    __tablename__ = "toy_note"  # deliberately no unique key: the engine must not apply twice

    id: int | None = Field(default=None, primary_key=True)
    note_id: str = Field(max_length=64, index=True)
    ticket_id: str = Field(max_length=64)
    text: str = ""
    client_id: str = Field(default="", max_length=64)


SYNC_TABLES = [m.__table__ for m in (SyncClient, SyncMutation, SyncChange, SyncConflict, SyncRejection, SyncIdentity)]


def create_tables(engine: Engine) -> None:
    """The sync tables (until the server's migration includes them) and the toy's."""
    SQLModel.metadata.create_all(engine, tables=SYNC_TABLES)
    Toy.metadata.create_all(engine)
    with write_session(engine) as session:
        ensure_identity(session)


class AddNote(msgspec.Struct):
    ticket_id: str
    note_id: str
    text: Annotated[str, msgspec.Meta(max_length=200)]


class SetTitle(msgspec.Struct):
    ticket_id: str
    base_version: int
    title: str


class SetStatus(msgspec.Struct):
    ticket_id: str
    status: str


class SetCrew(msgspec.Struct):
    ticket_id: str
    crew: str


def _ticket(session: Session, ticket_id: str) -> ToyTicket:
    ticket = session.get(ToyTicket, ticket_id)
    if ticket is None:
        raise Rejected(f"no ticket {ticket_id}")
    return ticket


def _bump(session: Session, ticket: ToyTicket) -> Applied:
    ticket.version += 1
    session.add(ticket)
    record_change(session, entity="toy_ticket", entity_id=ticket.id, op="upsert",
                  scopes=[f"crew:{ticket.crew}", "all"], version=ticket.version)
    return Applied(server_version=ticket.version)


def add_note(session: Session, ctx: MutationContext, args: AddNote) -> Applied:
    ticket = _ticket(session, args.ticket_id)
    session.add(ToyNote(note_id=args.note_id, ticket_id=ticket.id, text=args.text, client_id=ctx.client_id))
    if args.text == "refuse":
        raise Rejected("refused by the toy")
    if args.text == "explode":
        session.flush()  # the note is written, then the mutator fails: the savepoint undoes it
        raise RuntimeError("boom")
    applied = _bump(session, ticket)
    applied.result = {"note_id": args.note_id}
    return applied


RUNS: list[int] = []  # the length of every run add_notes applied at once


def add_notes(session: Session, contexts: list[MutationContext], many: list[AddNote]) -> list[Applied]:
    """A run of notes at once; any refusal or error sends the engine back to one by one."""
    outcomes = [add_note(session, ctx, args) for ctx, args in zip(contexts, many, strict=True)]
    RUNS.append(len(many))
    return outcomes


def set_title(session: Session, ctx: MutationContext, args: SetTitle) -> Applied:
    ticket = _ticket(session, args.ticket_id)
    if optimistic_text(ctx, entity="toy_ticket", entity_id=ticket.id, field="title",
                       base_version=args.base_version, current_version=ticket.title_version,
                       server_value=ticket.title, client_value=args.title):
        ticket.title = args.title
        applied = _bump(session, ticket)
        ticket.title_version = ticket.version
        return applied
    return Applied(server_version=ticket.version)


def set_status(session: Session, ctx: MutationContext, args: SetStatus) -> Applied:
    ticket = _ticket(session, args.ticket_id)
    if ticket.status == "cancelled" and args.status == "completed":
        ctx.conflict(entity="toy_ticket", entity_id=ticket.id, field="status", base_version=None,
                     server_value=ticket.status, client_value=args.status, kind="transition")
        return Applied(server_version=ticket.version, conflicted=True)
    if not check_transition(STATES, ticket.status, args.status):
        raise Rejected(f"cannot go from {ticket.status} to {args.status}")
    ticket.status = args.status
    return _bump(session, ticket)


def set_crew(session: Session, ctx: MutationContext, args: SetCrew) -> Applied:
    ticket = _ticket(session, args.ticket_id)
    server_owned(ctx, entity="toy_ticket", entity_id=ticket.id, field="crew",
                 server_value=ticket.crew, client_value=args.crew)
    return Applied(server_version=ticket.version)


REGISTRY = MutatorRegistry((
    Mutator("add_note", 1, AddNote, add_note, add_notes),
    Mutator("set_title", 1, SetTitle, set_title),
    Mutator("set_status", 1, SetStatus, set_status),
    Mutator("set_crew", 1, SetCrew, set_crew),
))


def load_tickets(session: Session, entity: str, ids: list[str], actor: Any) -> dict[str, Any]:
    """Visible to the dispatcher, and to the crew that holds the ticket."""
    tickets = session.exec(select(ToyTicket).where(ToyTicket.id.in_(ids)))  # type: ignore[attr-defined]
    return {t.id: (t.version, {"title": t.title, "status": t.status, "crew": t.crew})
            if actor in ("dispatcher", t.crew) else None for t in tickets}


def make_engine(**options: Any) -> SyncEngine:
    return SyncEngine(registry=REGISTRY, loaders={"toy_ticket": load_tickets}, **options)


def note_count(session: Session, note_id: str) -> int:
    return session.exec(select(func.count()).select_from(ToyNote).where(ToyNote.note_id == note_id)).one()
