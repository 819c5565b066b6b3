"""Great Expectations, run one way for every kind of input: a suite on a pandas DataFrame in an
ephemeral context (in-memory stores, no analytics, no progress bars: no project folder, no data
docs, nothing written).

Each input module (:mod:`include.validation.billable_lines`, :mod:`include.validation.employee`)
builds its frame and its expectations, then calls :func:`build_suite` and :func:`validate_frame`
and turns GE's JSON results into its own outcomes and messages.

great_expectations (about 10 s to import) and pandas are imported inside the functions, so
importing this module costs nothing at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class SuiteRunError(RuntimeError):
    """Great Expectations could not evaluate an expectation (a bug or a broken suite, not bad data)."""


def ephemeral_context() -> Any:
    """A fresh ephemeral context: in-memory stores, no analytics, no progress bars, nothing on disk."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def build_suite(
    name: str, expectations: Sequence[Any], *, meta: Mapping[str, Any] | None = None, source: str = ""
) -> Any:
    """A great_expectations ``ExpectationSuite`` (not saved anywhere), complete or not at all.

    :param name: the suite's name.
    :param expectations: GE expectations, as objects or in GE's JSON form (``type``, ``kwargs``,
        ``meta``).
    :param meta: the suite's ``meta``.
    :param source: where the expectations come from (a file), for the error message.
    :raises SuiteRunError: an expectation could not be built (GE logs and drops it; a partial suite
        never runs).
    """
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name=name, expectations=list(expectations), meta=dict(meta) if meta is not None else None
    )
    if len(suite.expectations) != len(expectations):
        raise SuiteRunError(
            f"{source or name}: only {len(suite.expectations)} of {len(expectations)} "
            "expectations could be built"
        )
    return suite


def exception_message(info: Any) -> str | None:
    """The message of an exception GE caught, reported either as one dict or as one per metric."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def validate_frame(
    frame: pd.DataFrame,
    suite: Any,
    *,
    data_source: str,
    asset: str,
    batch: str,
    parameters: Mapping[str, Any] | None = None,
    index_columns: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Validate ``frame`` with ``suite``; GE's JSON result of every expectation, in suite order.

    :param frame: the data, one row per record.
    :param suite: from :func:`build_suite`.
    :param data_source: the pandas data source's name (with ``asset``, the results' ``batch_id``).
    :param asset: the DataFrame asset's name.
    :param batch: the whole-DataFrame batch definition's name.
    :param parameters: the suite's ``$PARAMETER`` values for this run.
    :param index_columns: columns that identify an unexpected row in the results (default: the
        frame's index).
    :raises SuiteRunError: an expectation could not be evaluated.
    """
    context = ephemeral_context()
    frame_asset = context.data_sources.add_pandas(data_source).add_dataframe_asset(asset)
    validated = frame_asset.add_batch_definition_whole_dataframe(batch).get_batch(
        batch_parameters={"dataframe": frame}
    )
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    if index_columns:
        result_format["unexpected_index_column_names"] = list(index_columns)
    result = validated.validate(
        suite,
        result_format=result_format,
        expectation_parameters=dict(parameters) if parameters is not None else None,
    )
    results: list[dict[str, Any]] = [r.to_json_dict() for r in result.results]
    for item in results:
        failure = exception_message(item.get("exception_info"))
        if failure is not None:
            config = item.get("expectation_config") or {}
            raise SuiteRunError(f"{config.get('type')} {config.get('kwargs')} could not run: {failure}")
    return results
