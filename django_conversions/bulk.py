"""Statements that run constantly with the same shape, without the ORM compiling them anew.

The outbox insert on the checkout and the attempt rows a worker writes (``insert``,
``insert_sharing``), a flush's updates by primary key (``update_pks``), a claim's UPDATE that
returns the rows it changed (``update_returning_sql`` / ``run_returning``, compiled once as a
``template``): compiling the same query each time cost more than executing it. Statement
text is built once; values are prepared by the model fields themselves, as the ORM does.
Instances made by the hundred are made here too (``bare_instance``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar, cast

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.db.models.sql import UpdateQuery
from django.utils import timezone

M = TypeVar("M", bound=models.Model)

_sql_cache: dict[tuple[type[models.Model], str, int, str | None, bool], str] = {}


def _fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


# Field classes whose preparation returns values of these exact types unchanged (text as
# text, whole numbers as whole numbers, None as NULL): such values skip the field's
# preparation, most of the cost of a row. Subclasses (e.g. encrypted text) are not listed.
_NONE = type(None)
_UNCHANGED: dict[type[models.Field[Any, Any]], tuple[type, ...]] = {
    models.CharField: (str, _NONE),
    models.TextField: (str, _NONE),
    models.IntegerField: (int, _NONE),
    models.PositiveIntegerField: (int, _NONE),
    models.PositiveSmallIntegerField: (int, _NONE),
    models.BigIntegerField: (int, _NONE),
    models.AutoField: (int, _NONE),
    models.BigAutoField: (int, _NONE),
    models.DateTimeField: (_NONE,),
    models.UUIDField: (_NONE,),
}


def _unchanged_types(field: models.Field[Any, Any]) -> tuple[type, ...]:
    # A foreign key's value is its target's (an event's primary key for an attempt row).
    return _UNCHANGED.get(type(field.target_field if field.is_relation else field), ())


def _reads_attribute(field: models.Field[Any, Any]) -> bool:
    """Is the field's value on save simply its attribute (no auto_now and the like)?"""
    pre_save = type(field).pre_save
    return pre_save is models.Field.pre_save or (
        pre_save in _DATE_PRE_SAVES and not _is_stamp(field)
    )


def _is_stamp(field: models.Field[Any, Any]) -> bool:
    """Does the field stamp the time of the save (auto_now, or auto_now_add on an insert)?"""
    if type(field).pre_save not in _DATE_PRE_SAVES:
        return False
    date = cast(models.DateField, field)
    return bool(date.auto_now or date.auto_now_add)


def _stamps_time(field: models.Field[Any, Any]) -> bool:
    """A time stamp (a date stamp takes today's date, left to its pre_save())."""
    return type(field).pre_save is models.DateTimeField.pre_save and _is_stamp(field)


_DATE_PRE_SAVES = (models.DateField.pre_save, models.DateTimeField.pre_save)

# By model: each field's attname, how its value on save is read, the field, the types of
# values it saves unchanged.
_Plan: TypeAlias = "list[tuple[str, str, models.Field[Any, Any], tuple[type, ...]]]"
_read_plans: dict[type[models.Model], _Plan] = {}
_ATTRIBUTE, _STAMP, _PRE_SAVE = "attribute", "stamp", "pre_save"


def _read_plan(model: type[models.Model]) -> _Plan:
    plan = _read_plans.get(model)
    if plan is None:
        plan = _read_plans[model] = [
            (
                f.attname,
                _ATTRIBUTE if _reads_attribute(f) else _STAMP if _stamps_time(f) else _PRE_SAVE,
                f,
                _unchanged_types(f),
            )
            for f in _fields(model)
        ]
    return plan


def _sql(
    model: type[models.Model],
    using: str,
    count: int,
    returning: str | None,
    skip_conflicts: bool = False,
) -> str:
    cache_key = (model, using, count, returning, skip_conflicts)
    if cache_key not in _sql_cache:
        quote = connections[using].ops.quote_name
        fields = _fields(model)
        columns = ", ".join(quote(f.column) for f in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
        sql += ", ".join([row] * count)
        if skip_conflicts:
            sql += " ON CONFLICT DO NOTHING"
        if returning:
            pk = quote(model._meta.pk.column)
            sql += f" RETURNING {pk}, {quote(model._meta.get_field(returning).column)}"
        _sql_cache[cache_key] = sql
    return _sql_cache[cache_key]


def _params(rows: list[list[Any]], plan: _Plan, connection: Any) -> list[Any]:
    """The rows' values (one list per row, in the plan's field order) as the fields prepare
    them for the database.

    Values of the types a field saves unchanged go as they are (most of a row); a time met
    again (one timestamp in several columns and rows) is prepared once.
    """
    params: list[Any] = []
    prepared: dict[int, Any] = {}  # by id(): the rows hold the values, so no id is reused
    columns = [(field, unchanged) for _, _, field, unchanged in plan]
    for values in rows:
        params += [
            value if type(value) in unchanged else _prepared(field, value, connection, prepared)
            for (field, unchanged), value in zip(columns, values, strict=True)
        ]
    return params


def _prepared(
    field: models.Field[Any, Any], value: Any, connection: Any, prepared: dict[int, Any]
) -> Any:
    """``field.get_db_prep_save(value)``, where a time already prepared for another column is
    reused (a DateTimeField prepares by the value alone; one timestamp often fills several
    columns, and preparing one costs more than anything else in a row)."""
    if type(field) is not models.DateTimeField:
        return field.get_db_prep_save(value, connection)
    if id(value) not in prepared:
        prepared[id(value)] = field.get_db_prep_save(value, connection)
    return prepared[id(value)]


def insert(
    rows: list[M],
    using: str,
    *,
    match_pk_by: str | None = None,
    now: datetime | None = None,
    skip_conflicts: bool = False,
) -> list[M]:
    """INSERT ``rows`` in one statement; returns the rows inserted.

    With ``match_pk_by`` (a unique UUID field set before saving) the rows get their primary
    keys back, matched by that field since RETURNING rows come in no guaranteed order.
    Databases that can't return rows from a multi-row insert use ``bulk_create()``.
    Fields that stamp the time of the save (auto_now) get one time for the statement:
    ``now``, or the time of the insert. ``skip_conflicts`` (with ``match_pk_by``, where
    ``skips_conflicts()``): rows that would break a unique constraint are left out, and only
    the others are returned.
    """
    if not rows:
        return rows
    model = type(rows[0])
    connection = connections[using]
    if skip_conflicts and not (match_pk_by and skips_conflicts(using)):
        raise ValueError("skip_conflicts needs match_pk_by and a database that skips_conflicts()")
    if match_pk_by and not connection.features.can_return_rows_from_bulk_insert:
        return model._default_manager.db_manager(using).bulk_create(rows)
    plan = _read_plan(model)
    now = now or timezone.now()
    values = [
        [
            getattr(row, attname) if how is _ATTRIBUTE else _value(row, attname, how, f, now)
            for attname, how, f, _ in plan
        ]
        for row in rows
    ]
    params = _params(values, plan, connection)
    with connection.cursor() as cursor:
        cursor.execute(_sql(model, using, len(rows), match_pk_by, skip_conflicts), params)
        returned = cursor.fetchall() if match_pk_by else []
    if match_pk_by:
        # The database returns each key as it was sent: match by the prepared values.
        by_key = {str(key): pk for pk, key in returned}
        slot = next(i for i, (attname, *_) in enumerate(plan) if attname == match_pk_by)
        kept = []  # all of them, unless conflicts were skipped
        for index, row in enumerate(rows):
            pk = by_key.get(str(params[index * len(plan) + slot]))
            if pk is not None:
                row.pk = pk
                kept.append(row)
        rows = kept
    for row in rows:
        row._state.adding = False
        row._state.db = using
    return rows


def skips_conflicts(using: str) -> bool:
    """Can ``insert(..., skip_conflicts=True)`` run here (ON CONFLICT DO NOTHING, RETURNING)?"""
    return _returns_from_updates(connections[using])


def _value(
    row: models.Model, attname: str, how: str, field: models.Field[Any, Any], now: datetime
) -> Any:
    """The value ``field`` saves for ``row``, read as the plan says."""
    if how == _ATTRIBUTE:
        return getattr(row, attname)
    if how == _STAMP:  # what its pre_save() does, with the statement's time
        setattr(row, attname, now)
        return now
    return field.pre_save(row, True)


def insert_sharing(
    model: type[models.Model],
    groups: Sequence[tuple[Mapping[str, Any], Sequence[Any]]],
    varying: str,
    using: str,
) -> None:
    """INSERT rows given as values, without model instances: per ``(shared, keys)`` group,
    one row per key, the ``varying`` field (an attname) taking the key and every other field
    the group's ``shared`` value or, left out, its default as ``Model()`` would fill it in.

    For rows written by the hundred that are mostly alike (a batch request's delivery
    attempts differ only in their event): a group's values are prepared for the database
    once, not once per row.
    """
    if not groups:
        return
    fields = _fields(model)
    slot = next(i for i, f in enumerate(fields) if f.attname == varying)
    as_is = _unchanged_types(fields[slot])
    connection = connections[using]
    params: list[Any] = []
    count = 0
    for shared, keys in groups:
        row = [
            f.get_db_prep_save(
                shared[f.attname] if f.attname in shared else f.get_default(), connection
            )
            for f in fields
        ]
        for key in keys:
            row[slot] = (
                key if type(key) in as_is else fields[slot].get_db_prep_save(key, connection)
            )
            params.extend(row)
        count += len(keys)
    if count:
        with connection.cursor() as cursor:
            cursor.execute(_sql(model, using, count, None), params)


def init_watched(model: type[models.Model]) -> bool:
    """Does anything receive ``pre_init`` / ``post_init`` for ``model``? Then its instances
    must be made by ``Model.__init__``, not by ``bare_instance()``."""
    return pre_init.has_listeners(model) or post_init.has_listeners(model)


def bare_instance(model: type[M], values: dict[str, Any], *, db: str | None = None) -> M:
    """An instance holding ``values`` (by attname), made without ``Model.__init__``.

    For instances made by the hundred (outbox rows on the checkout, claimed events): the
    per-field loop of ``__init__`` cost more than the rest of their work. It does nothing more
    here as long as no field has a setter that does more than store the value and nobody
    watches (see ``init_watched``). Fields left out load on access, as with ``only()``;
    ``db`` marks the instance as read from that database.
    """
    instance = model.__new__(model)
    state = instance._state = ModelState()
    if db is not None:
        state.adding = False
        state.db = db
    instance.__dict__.update(values)
    return instance


def update_pks(model: type[M], pks: Sequence[Any], values: Mapping[str, Any], using: str) -> int:
    """``model.objects.filter(pk__in=pks).update(**values)`` for plain values; the number of
    rows changed.

    A flush writes a group of claimed events this way every half second or so: the keys come
    from the database, so they go back as they are, the values are prepared by their fields as
    the ORM prepares them, and the statement's text is put together without compiling a query.
    """
    if not pks:
        return 0
    connection = connections[using]
    meta = model._meta
    fields = [meta.get_field(name) for name in values]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "
        f"WHERE {quote(meta.pk.column)} IN ({', '.join(['%s'] * len(pks))})"
    )
    params = [
        f.get_db_prep_save(v, connection) for f, v in zip(fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *pks])
        return cursor.rowcount


# Backends whose UPDATE takes a RETURNING clause (SQLite from 3.35, which is also when it
# can return rows from an INSERT; MariaDB returns rows from INSERT but not from UPDATE). Both
# also know ON CONFLICT DO NOTHING (SQLite from 3.24).
_UPDATE_RETURNING_VENDORS = ("postgresql", "sqlite")


def _returns_from_updates(connection: Any) -> bool:
    return (
        connection.vendor in _UPDATE_RETURNING_VENDORS
        and connection.features.can_return_rows_from_bulk_insert
    )


def update_returning_sql(
    queryset: models.QuerySet[Any], values: dict[str, Any], fields: Sequence[str]
) -> tuple[str, list[Any]] | None:
    """``queryset.update(**values)`` that also returns ``fields`` of the rows it changes, as
    SQL and parameters for ``run_returning()``; None where the database can't return rows
    from an UPDATE (the caller updates, then reads)."""
    connection = connections[queryset.db]
    if not _returns_from_updates(connection):
        return None
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(target.column) for target in _targets(queryset.model, fields))
    return f"{sql} RETURNING {columns}", list(params)


def run_returning(
    model: type[models.Model], using: str, sql: str, params: Sequence[Any], fields: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Run a statement returning ``fields`` of ``model``; its rows as the ORM reads them."""
    connection = connections[using]
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    table = model._meta.db_table
    converters = []
    for index, target in enumerate(_targets(model, fields)):
        column = target.get_col(table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        converters.extend((index, converter, column) for converter in found)
    if not converters:
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        row = list(row)
        for index, converter, column in converters:
            row[index] = converter(row[index], column, connection)
        converted.append(tuple(row))
    return converted


def _targets(model: type[models.Model], fields: Sequence[str]) -> list[models.Field[Any, Any]]:
    meta = model._meta
    return [meta.pk if name == "pk" else meta.get_field(name) for name in fields]


@dataclass(frozen=True)
class Template:
    """A statement the ORM compiled once, to run again with new values for some parameters.

    Building and compiling a queryset costs far more than running a small statement; a
    worker's claim is the same statement every time but for the time, token and lease.
    """

    sql: str
    params: list[Any]
    slots: list[tuple[int, str]]  # (parameter position, name of the value that goes there)
    fields: dict[str, models.Field[Any, Any]]  # the fields each value is prepared as

    def params_for(self, values: Mapping[str, Any], connection: Any) -> list[Any]:
        prepared = {
            name: self.fields[name].get_db_prep_value(value, connection)
            for name, value in values.items()
        }
        params = list(self.params)
        for position, name in self.slots:
            params[position] = prepared[name]
        return params


def template(
    build: Callable[[Mapping[str, Any]], tuple[str, Sequence[Any]] | None],
    fields: Mapping[str, models.Field[Any, Any]],
    using: str,
) -> Template | None:
    """Compile ``build(values)`` once with stand-in values and note where each lands among the
    parameters. None when ``build`` gives nothing, or some stand-in can't be told apart from
    the other parameters (then compile every time)."""
    connection = connections[using]
    stand_ins = {name: _stand_in(field, n) for n, (name, field) in enumerate(fields.items(), 1)}
    if any(value is None for value in stand_ins.values()):
        return None
    statement = build(stand_ins)
    if statement is None:
        return None
    sql, params = statement
    prepared = {
        name: fields[name].get_db_prep_value(v, connection) for name, v in stand_ins.items()
    }
    slots = []
    for position, param in enumerate(params):
        names = [name for name, value in prepared.items() if _same(value, param)]
        if len(names) > 1:
            return None
        if names:
            slots.append((position, names[0]))
    if {name for _, name in slots} != set(fields):
        return None
    return Template(sql, list(params), slots, dict(fields))


def _stand_in(field: models.Field[Any, Any], n: int) -> Any:
    """A value for ``field`` that no real statement would hold (the n-th of its kind)."""
    if isinstance(field, models.DateTimeField):
        moment = datetime(2000, 1, 1, 0, 0, 0, n)
        return moment.replace(tzinfo=UTC) if settings.USE_TZ else moment
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=n)
    return None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
