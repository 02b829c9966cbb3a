"""The log-mel parameters of the reference extractor, kept free of librosa so that the torch extractor in
``uclser_tune.embed`` shares them with the librosa one in ``uclser_tune.data.features``."""

SR = 22_050
N_FFT = 2048
WIN = 660
HOP = 220
N_MELS = 96
FMIN = 50.0
FMAX = 10_500.0
EPS = 1.1e-8
