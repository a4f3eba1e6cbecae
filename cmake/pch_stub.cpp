// Translation unit that carries the precompiled LibTorch headers (cmake/clipper_target.cmake).
