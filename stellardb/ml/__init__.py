"""Models: the feature contract, training (Keras), the NumPy scorer, model folders, metrics, plots.

Only ``mlp.py``, ``train.py`` and ``model_store.py`` import Keras/TensorFlow; ``scorer``,
``score``, ``features`` and ``metrics`` run on NumPy alone (tests/test_architecture.py).
"""
