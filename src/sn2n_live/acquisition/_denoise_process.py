"""Entry point of the denoise process: ``python -m sn2n_live.acquisition._denoise_process``.

Started by :class:`~sn2n_live.acquisition._isolated.ProcessLiveDenoiseHandler`, which
writes the address and key of its listener to this process's stdin.
"""

import pickle
import sys
from multiprocessing.connection import Client

from sn2n_live.acquisition._isolated import _child_main

if __name__ == "__main__":
    address, authkey = pickle.load(sys.stdin.buffer)
    _child_main(Client(address, authkey=authkey))
