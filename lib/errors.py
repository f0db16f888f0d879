"""One base exception for the project, with narrow subclasses whose messages say how to fix things.

Each class carries the HTTP status an app answers with when it reaches a request (``http_status``),
so the FastAPI twin and the Chalice app map every error the same way.
"""


class PipelineError(Exception):
    """Base class of every error this project raises on purpose."""

    http_status = 500


class DataValidationError(PipelineError):
    """Input data does not follow the raw PaySim transaction contract."""

    http_status = 422


class SourceError(PipelineError):
    """A data source cannot be found, opened or parsed."""

    http_status = 400


class ParameterError(PipelineError):
    """A pipeline parameter, profile, setting or notebook selection is invalid."""

    http_status = 400


class ServiceUnavailable(PipelineError):
    """Something a request needs is not there (yet): no model loaded, a dependency down."""

    http_status = 503
