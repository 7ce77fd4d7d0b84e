import platform

import numpy as np

from flywheel.cycle.memory import release_freed_memory


def test_freed_memory_is_released_where_the_c_library_can():
    blocks = [np.ones(4096) for _ in range(2000)]  # heap pages, then freed
    del blocks
    released = release_freed_memory()
    assert released is (platform.libc_ver()[0] == "glibc")  # glibc trims; else a no-op
    assert release_freed_memory() is released  # repeatable, nothing left to free
