"""Models: networks (:mod:`~medseg.models.networks`), the model folder (:mod:`~medseg.models.folder`),
devices (:mod:`~medseg.models.devices`), what a model is (:mod:`~medseg.models.info`), nnU-Net's
networks rebuilt from their plans (:mod:`~medseg.models.nnunet`) and the bundled phantom model.

Importing the package loads neither torch nor MONAI; its modules that build networks do.
"""
