"""Training and evaluation of behaviour-cloning policies (BC, BC-RNN) on demoset datasets.

- `config`: robomimic-style JSON configs, validated key by key, and templates.
- `models`, `algos`: networks (MLP, LSTM, GMM head, ResNet-18 camera encoder) and BC / BC-RNN.
- `trainer`: epochs, validation, TensorBoard logs, checkpoints, exact resume, DDP.
- `rollout`: running a checkpoint's policy in its dataset's environment.

Importing this package does not import torch; its modules do.
"""
