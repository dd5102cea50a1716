"""OPTIMADE filters → SQLAlchemy conditions over the store's records.

The filter is parsed by the ``optimade`` package's Lark grammar (v1.2); :class:`SQLFilter`
turns the tree into one SQL condition on :class:`~matdx.store.models.Record`, using the side
tables where the store has them (``record_elements`` for ``elements``; ``record_properties``
for indexed results). The caller adds the access filter.

Semantics: a comparison on a field an entry has no value for is false, and ``NOT`` of it is
true (each comparison is guarded by ``IS NOT NULL``, so SQL's third truth value never
reaches ``NOT``). Fields of other providers (``_other_x``) are unknown: comparisons with them
are false and ``IS UNKNOWN`` is true. Errors: :class:`FilterError` (HTTP 400) for a filter
that is malformed, names an unknown field or compares values of the wrong type;
:class:`FilterNotSupported` (HTTP 501) for valid OPTIMADE this service does not evaluate
(comparisons between two properties, HAS on lists of vectors or of dictionaries, members
of the dictionaries in ``species``). Lists without an index table are read from the document
(:mod:`matdx.api.optimade_lists`); correlated queries (``a:b HAS x:y``) join them by position,
and every value in a HAS list may carry its own operator.
"""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta
from typing import Any

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import VisitError
from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from matdx.api.optimade_fields import FIELDS, Field, nelements_column
from matdx.api.optimade_lists import document_known, is_array, list_length, members
from matdx.store.export_optimade import PREFIX
from matdx.store.models import Record, RecordElement, RecordProperty

__all__ = ["FilterError", "FilterNotSupported", "parse_filter"]

MAX_FILTER = 5000  # characters


class FilterError(ValueError):
    """A filter is malformed or names an unknown field (HTTP 400)."""


class FilterNotSupported(NotImplementedError):
    """A valid OPTIMADE filter this service does not evaluate (HTTP 501)."""


_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SET_WORDS = ("ALL", "ANY", "ONLY")
_REVERSED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class _Property:
    """A property named in a filter: a served field, an indexed result by name, or unknown."""

    def __init__(
        self,
        name: str,
        field: Field | None,
        property_name: str | None = None,
        any_case: bool = False,
    ):
        self.name = name
        self.field = field
        self.property_name = property_name  # a record_properties row
        self.any_case = any_case  # OPTIMADE names are lower case; matdx's B0_GPa is not

    def names_property(self) -> ColumnElement[bool]:
        """The record_properties rows of this property."""
        if self.any_case:
            return func.lower(RecordProperty.name) == self.property_name
        return RecordProperty.name == self.property_name

    @property
    def unknown(self) -> bool:
        return self.field is None and self.property_name is None


class _Unknown:
    """A constant in a filter's comparison with no SQL column (e.g. ``1 = 1``)."""


def _unescape(text: str) -> str:
    inner = text[1:-1]
    out, escaped = [], False
    for char in inner:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise FilterError(f'{name}: compare with a timestamp such as "2026-01-31T12:00:00Z"')
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise FilterError(f"{name}: {value!r} is not an RFC 3339 timestamp") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_type(prop: _Property, value: Any) -> None:
    kind = "float" if prop.property_name else prop.field.kind  # type: ignore[union-attr]
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        "string": isinstance(value, str),
        "timestamp": isinstance(value, str),
        "integer": numeric,
        "float": numeric,
        "boolean": isinstance(value, bool),
    }.get(kind)
    if fits is None:
        raise FilterNotSupported(f"{prop.name}: comparisons on {kind} fields are not supported")
    if not fits:
        raise FilterError(f"{prop.name}: a {kind} field cannot be compared with {value!r}")


@v_args(inline=False)
class SQLFilter(Transformer):
    """Lark transformer from an OPTIMADE filter tree to a SQLAlchemy condition.

    Parameters
    ----------
    dialect
        ``sqlite`` or ``postgresql``: string operators are case-sensitive on both (SQLite's
        LIKE is not, so there they use ``instr``/``substr``).
    """

    def __init__(self, dialect: str, text: str = "") -> None:
        super().__init__()
        self.dialect = dialect
        self.text = text
        self.warnings: list[str] = []

    # -- values --------------------------------------------------------------------------
    def __default__(self, data: Any, children: Any, meta: Any) -> Any:
        raise FilterNotSupported(f"filter construct {data!r} is not supported")

    def filter(self, children: list) -> ColumnElement[bool]:
        return children[0] if children else true()

    def string(self, children: list) -> str:
        return _unescape(str(children[0]))

    def number(self, children: list) -> int | float:
        token = children[0]
        return int(token) if token.type == "SIGNED_INT" else float(token)

    def signed_int(self, children: list) -> int:
        return int(children[0])

    @v_args(meta=True)
    def bool(self, meta: Any, children: list) -> bool:
        # optimade's grammar drops the TRUE/FALSE token itself: read it from the filter text
        return self.text[meta.start_pos : meta.end_pos] == "TRUE"

    def constant(self, children: list) -> Any:
        return children[0]

    def value(self, children: list) -> Any:
        return children[0]

    def non_string_value(self, children: list) -> Any:
        return children[0]

    def not_implemented_string(self, children: list) -> Any:
        return children[0]

    def property(self, children: list) -> _Property:
        names = [str(c) for c in children]
        name = names[0]
        if len(names) > 1:
            return self._nested(names)
        if name in FIELDS:
            return _Property(name, FIELDS[name], FIELDS[name].property_name)
        if name.startswith("_") and not name.startswith(PREFIX):
            self.warnings.append(f"{name}: a field of another provider, treated as unknown")
            return _Property(name, None)
        if name in _standard_fields():
            self.warnings.append(f"{name}: a standard field this service does not hold")
            return _Property(name, None)
        raise FilterError(f"{name!r} is not a known or searchable field of structures")

    def _nested(self, names: list[str]) -> _Property:
        """``_matdx_properties.b0_gpa``: a result indexed by name, matched whatever its case
        (OPTIMADE names are lower case, matdx's results ``B0_GPa``); members of other fields."""
        dotted, head = ".".join(names), names[0]
        if head == f"{PREFIX}properties":
            if len(names) == 2:
                return _Property(dotted, None, property_name=names[1], any_case=True)
            self.warnings.append(f"{dotted}: the results in {head} are numbers; treated as unknown")
            return _Property(dotted, None)
        if head.startswith("_") and not head.startswith(PREFIX):
            self.warnings.append(f"{dotted}: a field of another provider, treated as unknown")
            return _Property(dotted, None)
        field = FIELDS.get(head)
        if field is None:
            if head in _standard_fields():
                self.warnings.append(f"{dotted}: a standard field this service does not hold")
                return _Property(dotted, None)
            raise FilterError(f"{head!r} is not a known or searchable field of structures")
        if field.member == "dictionary":
            raise FilterNotSupported(
                f"{dotted}: members of the dictionaries in the list {head} are not searchable"
            )
        raise FilterError(f"{dotted}: {head} ({field.kind}) has no members")

    # -- logic ---------------------------------------------------------------------------
    def expression(self, children: list) -> ColumnElement[bool]:
        return children[0] if len(children) == 1 else or_(*children)

    def expression_clause(self, children: list) -> ColumnElement[bool]:
        return children[0] if len(children) == 1 else and_(*children)

    def expression_phrase(self, children: list) -> ColumnElement[bool]:
        parts = [c for c in children if c is not None]
        if len(parts) == 2:  # NOT, condition
            return not_(parts[1])
        return parts[0]

    def comparison(self, children: list) -> ColumnElement[bool]:
        return children[0]

    # -- comparisons ---------------------------------------------------------------------
    def constant_first_comparison(self, children: list) -> ColumnElement[bool]:
        constant, op, other = children[0], str(children[1]), children[2]
        if isinstance(other, _Property):
            return self._compare(other, _REVERSED[op], constant)
        try:
            return true() if _COMPARE[op](constant, other) else false()
        except TypeError as err:
            raise FilterError(f"cannot compare {constant!r} {op} {other!r}") from err

    def property_first_comparison(self, children: list) -> ColumnElement[bool]:
        prop, rhs = children[0], children[1]
        return rhs(prop)

    def value_op_rhs(self, children: list) -> Any:
        op, value = str(children[0]), children[1]
        return lambda prop: self._compare(prop, op, value)

    def known_op_rhs(self, children: list) -> Any:
        known = str(children[1]) == "KNOWN"

        def condition(prop: _Property) -> ColumnElement[bool]:
            present = self._present(prop)
            return present if known else not_(present)

        return condition

    def fuzzy_string_op_rhs(self, children: list) -> Any:
        words = [str(c) for c in children if isinstance(c, Token)]
        value = children[-1]
        how = words[0]

        def condition(prop: _Property) -> ColumnElement[bool]:
            if prop.unknown:
                return false()
            if prop.field is None or prop.field.kind != "string":
                raise FilterError(f"{prop.name}: {how} applies to string fields only")
            if not isinstance(value, str):
                raise FilterError(f"{prop.name} {how}: give a string")
            if prop.name == "type":  # every entry here is a structure
                matches = {
                    "CONTAINS": value in "structures",
                    "STARTS": "structures".startswith(value),
                    "ENDS": "structures".endswith(value),
                }[how]
                return true() if matches else false()
            column = prop.field.column()
            return and_(column.is_not(None), self._string_match(column, how, value))

        return condition

    def _string_match(self, column: Any, how: str, value: str) -> ColumnElement[bool]:
        if self.dialect == "sqlite":  # LIKE ignores case on SQLite: compare exactly instead
            if how == "CONTAINS":
                return func.instr(column, value) > 0
            if how == "STARTS":
                return func.substr(column, 1, len(value)) == value
            return and_(
                func.length(column) >= len(value), func.substr(column, -len(value)) == value
            )
        if how == "CONTAINS":
            return column.contains(value, autoescape=True)
        if how == "STARTS":
            return column.startswith(value, autoescape=True)
        return column.endswith(value, autoescape=True)

    def value_list(self, children: list) -> list[tuple[str, Any]]:
        """``[OPERATOR] value, ...`` as (operator, value) pairs ("=" where none is given)."""
        pairs, pending = [], "="
        for child in children:
            if isinstance(child, Token) and child.type == "OPERATOR":
                pending = str(child)
                continue
            pairs.append((pending, child))
            pending = "="
        return pairs

    def value_zip(self, children: list) -> list[tuple[str, Any]]:
        """One tuple of a correlated query (``"Si":>0.3``): (operator, value) per property."""
        return self.value_list(children)

    def value_zip_list(self, children: list) -> list[list[tuple[str, Any]]]:
        return list(children)

    def set_op_rhs(self, children: list) -> Any:
        words = [str(c) for c in children if isinstance(c, Token) and c.type in _SET_WORDS]
        how = words[0] if words else "HAS"
        if how == "HAS":
            ops = [str(c) for c in children if isinstance(c, Token) and c.type == "OPERATOR"]
            pairs = [(ops[0] if ops else "=", children[-1])]
        else:
            pairs = children[-1]

        def condition(prop: _Property) -> ColumnElement[bool]:
            return self._set(prop, how, pairs)

        return condition

    def length_op_rhs(self, children: list) -> Any:
        parts = [c for c in children if c is not None]
        ops = [str(c) for c in parts if isinstance(c, Token) and c.type == "OPERATOR"]
        op = ops[0] if ops else "="
        number = parts[-1]

        def condition(prop: _Property) -> ColumnElement[bool]:
            return self._length(prop, op, number)

        return condition

    def property_zip_addon(self, children: list) -> list[_Property]:
        return list(children)

    def set_zip_op_rhs(self, children: list) -> Any:
        others = children[0]
        words = [str(c) for c in children if isinstance(c, Token) and c.type in _SET_WORDS]
        how = words[0] if words else "HAS"
        tuples = [children[-1]] if how == "HAS" else children[-1]

        def condition(prop: _Property) -> ColumnElement[bool]:
            return self._zip([prop, *others], how, tuples)

        return condition

    # -- SQL -----------------------------------------------------------------------------
    def _present(self, prop: _Property) -> ColumnElement[bool]:
        if prop.unknown:
            return false()
        if prop.property_name is not None:
            return Record.record_id.in_(
                select(RecordProperty.record_id).where(prop.names_property())
            )
        field = prop.field
        if field is not None and field.column is not None:
            return field.column().is_not(None)
        if field is not None and field.path is not None and prop.name.startswith(PREFIX):
            known = document_known(self.dialect, field.path, field.member)
            if prop.name == f"{PREFIX}pseudopotentials":  # an empty list is not served
                known = and_(known, list_length(self.dialect, field.path) > 0)
            return known
        return true()  # lists and constants every served structure has

    def _compare(self, prop: _Property, op: str, value: Any) -> ColumnElement[bool]:
        if isinstance(value, _Property):
            raise FilterNotSupported(f"comparing two properties ({prop.name}, {value.name})")
        if prop.unknown:
            return false()
        _check_type(prop, value)
        compare = _COMPARE[op]
        if prop.property_name is not None:
            return Record.record_id.in_(
                select(RecordProperty.record_id).where(
                    prop.names_property(),
                    compare(RecordProperty.value, value),
                )
            )
        field = prop.field
        assert field is not None
        if prop.name == "type":
            return true() if compare("structures", value) else false()
        if field.column is None:
            raise FilterNotSupported(f"{prop.name}: comparisons are not supported")
        column = field.column()
        if field.kind == "timestamp":
            return and_(column.is_not(None), self._compare_time(column, op, value, prop.name))
        return and_(column.is_not(None), compare(column, value))

    @staticmethod
    def _compare_time(column: Any, op: str, value: Any, name: str) -> ColumnElement[bool]:
        """Timestamps are served to the second: compare with the whole second named."""
        start = _timestamp(value, name)
        whole = start.microsecond == 0
        end = start + timedelta(seconds=1) if whole else start
        if op == "=":
            return and_(column >= start, column < end) if whole else column == start
        if op == "!=":
            return or_(column < start, column >= end) if whole else column != start
        if op == "<":
            return column < start
        if op == ">=":
            return column >= start
        if op == "<=":
            return column < end if whole else column <= start
        return column >= end if whole else column > start  # ">"

    def _list_field(self, prop: _Property, what: str) -> Field:
        """The field of a list property that HAS compares members of, checked."""
        field = prop.field
        if field is None or field.kind != "list":
            raise FilterError(f"{prop.name}: {what} applies to list fields only")
        if field.member in ("vector", "dictionary"):
            kind = "3-vectors" if field.member == "vector" else "dictionaries"
            raise FilterNotSupported(
                f"{prop.name}: its members are {kind}; {what} compares single values"
            )
        assert field.path is not None
        assert field.member is not None
        return field

    @staticmethod
    def _check_members(prop: _Property, field: Field, pairs: list[tuple[str, Any]]) -> None:
        for _, value in pairs:
            if isinstance(value, _Property):
                raise FilterNotSupported(f"{prop.name}: properties as set members")
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            fits = isinstance(value, str) if field.member == "string" else numeric
            if not fits:
                raise FilterError(
                    f"{prop.name}: its members are {field.member}s; cannot compare with {value!r}"
                )

    def _set(self, prop: _Property, how: str, pairs: list[tuple[str, Any]]) -> ColumnElement[bool]:
        """HAS / HAS ALL / HAS ANY / HAS ONLY, each value with its own operator."""
        if prop.unknown:
            return false()
        if prop.name == "structure_features":  # always empty
            return true() if how == "ONLY" else false()
        field = self._list_field(prop, "HAS")
        self._check_members(prop, field, pairs)

        def match(value: Any, op: str, wanted: Any) -> ColumnElement[bool]:
            return _COMPARE[op](value, wanted)

        if prop.name in ("elements", "species_at_sites"):
            # The index table of elements; a site's species is named by its element.
            def having(condition: Any) -> ColumnElement[bool]:
                return Record.record_id.in_(select(RecordElement.record_id).where(condition))

            element = RecordElement.element
            matches = [match(element, op, v) for op, v in pairs]
            if how in ("HAS", "ALL"):
                return and_(*(having(m) for m in matches))
            if how == "ANY":
                return having(or_(*matches))
            return ~having(not_(or_(*matches)))  # ONLY
        found = members(self.dialect, field.path, field.member)  # type: ignore[arg-type]

        def having_member(condition: Any) -> ColumnElement[bool]:
            return exists(select(literal(1)).select_from(found.table).where(condition))

        matches = [match(found.value, op, v) for op, v in pairs]
        if how in ("HAS", "ALL"):
            return and_(*(having_member(m) for m in matches))
        if how == "ANY":
            return having_member(or_(*matches))
        return and_(  # ONLY
            is_array(self.dialect, field.path),  # type: ignore[arg-type]
            ~having_member(not_(or_(*matches))),
        )

    def _zip(
        self, props: list[_Property], how: str, tuples: list[list[tuple[str, Any]]]
    ) -> ColumnElement[bool]:
        """Correlated lists: ``a:b HAS x:y`` holds when some position i has a[i] = x and
        b[i] = y (each value with its own operator)."""
        names = ":".join(p.name for p in props)
        for values in tuples:
            if len(values) != len(props):
                raise FilterError(f"{names}: give {len(props)} values per tuple, not {len(values)}")
        if any(p.unknown for p in props):
            return false()
        fields = [self._list_field(p, "HAS") for p in props]
        for i, (prop, field) in enumerate(zip(props, fields, strict=True)):
            self._check_members(prop, field, [values[i] for values in tuples])
        lists = [members(self.dialect, f.path, f.member) for f in fields]  # type: ignore[arg-type]
        same_position = [found.position == lists[0].position for found in lists[1:]]

        def match(values: list[tuple[str, Any]]) -> ColumnElement[bool]:
            return and_(
                *(
                    _COMPARE[op](found.value, wanted)
                    for found, (op, wanted) in zip(lists, values, strict=True)
                )
            )

        def having(condition: Any) -> ColumnElement[bool]:
            return exists(
                select(literal(1))
                .select_from(*(found.table for found in lists))
                .where(*same_position, condition)
            )

        if how in ("HAS", "ALL"):
            return and_(*(having(match(values)) for values in tuples))
        if how == "ANY":
            return having(or_(*(match(values) for values in tuples)))
        return and_(  # ONLY
            *(is_array(self.dialect, f.path) for f in fields),  # type: ignore[arg-type]
            ~having(not_(or_(*(match(values) for values in tuples)))),
        )

    def _length(self, prop: _Property, op: str, number: Any) -> ColumnElement[bool]:
        if prop.unknown:
            return false()
        if not isinstance(number, int):
            raise FilterError(f"{prop.name} LENGTH: give an integer")
        compare = _COMPARE[op]
        constant = {"structure_features": 0, "lattice_vectors": 3, "dimension_types": 3}
        if prop.name in constant:
            return true() if compare(constant[prop.name], number) else false()
        if prop.name in ("elements", "elements_ratios", "species"):
            return compare(nelements_column(), number)
        if prop.name in ("species_at_sites", "cartesian_site_positions"):
            return and_(Record.nsites.is_not(None), compare(Record.nsites, number))
        field = prop.field
        if field is None or field.kind != "list" or field.path is None:
            raise FilterError(f"{prop.name}: LENGTH applies to list fields only")
        length = list_length(self.dialect, field.path)
        return and_(length.is_not(None), compare(length, number))


def parse_filter(text: str, dialect: str) -> tuple[ColumnElement[bool], list[str]]:
    """The SQL condition of an OPTIMADE filter, and warnings (unknown provider fields).

    Raises
    ------
    FilterError
        Malformed filter, unknown field, wrong value type.
    FilterNotSupported
        Valid OPTIMADE this service does not evaluate.
    """
    from optimade.exceptions import BadRequest

    if len(text) > MAX_FILTER:
        raise FilterError(f"filter: longer than {MAX_FILTER} characters")
    try:
        tree: Tree = _parser().parse(text)
    except BadRequest as err:
        head, _, trace = str(err.detail).partition(". Lark traceback")
        reason = next((line.strip() for line in trace.splitlines()[1:] if line.strip()), "")
        raise FilterError(f"filter: {head}: {reason}" if reason else f"filter: {head}") from err
    except Exception as err:
        raise FilterError(f"filter: cannot parse {text!r}") from err
    transformer = SQLFilter(dialect, text)
    try:
        condition = transformer.transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, FilterError | FilterNotSupported):
            raise err.orig_exc from None
        raise FilterError(f"filter: {err.orig_exc}") from err
    return condition, transformer.warnings


_PARSER: Any = None


def _standard_fields() -> frozenset[str]:
    from optimade.models import StructureResourceAttributes

    return frozenset(StructureResourceAttributes.model_fields)


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from lark import Lark
        from optimade.filterparser import LarkParser
        from optimade.filterparser.lark_parser import AVAILABLE_PARSERS

        _PARSER = LarkParser(version=(1, 2, 0))
        # the same grammar, with positions kept so that TRUE and FALSE can be told apart
        with open(AVAILABLE_PARSERS[(1, 2, 0)]["default"]) as grammar:
            _PARSER.lark = Lark(grammar, maybe_placeholders=False, propagate_positions=True)
    return _PARSER
