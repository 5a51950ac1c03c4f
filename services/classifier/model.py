"""Compatibility names: the age/gender model, its preprocessing, runtimes and registry
moved to :mod:`common.models` so that training and ``agegender predict`` share them
without importing a service. Import from there; this module goes once nothing imports
it."""

from common.models import AgeGenderModel, InputSpec, load_model, resize_crop  # noqa: F401
