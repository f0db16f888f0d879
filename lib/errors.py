"""One base exception for the project, with narrow subclasses whose messages say how to fix things."""


class PipelineError(Exception):
    """Base class of every error this project raises on purpose."""


class DataValidationError(PipelineError):
    """Input data does not follow the raw PaySim transaction contract."""


class SourceError(PipelineError):
    """A data source cannot be found, opened or parsed."""


class ParameterError(PipelineError):
    """A pipeline parameter, profile or notebook selection is invalid."""


class NotebookFailed(PipelineError):
    """A pipeline notebook raised while executing; the executed copy is kept."""
