# Included before every project() of the llama-cpp-python build (CMAKE_PROJECT_INCLUDE_BEFORE,
# set by install-llama-cpp.sh). llama-cpp-python forces LLAMA_BUILD_COMMON on before it adds
# llama.cpp, yet its Python package never loads libllama-common (nor libmtmd, which
# LLAVA_BUILD=OFF leaves out): turning common off again inside llama.cpp's own project skips
# 60% of the compile work (and the HTTP library common links), for the same libllama and libggml.
if(PROJECT_NAME STREQUAL "llama_cpp")  # the top project has run: this is llama.cpp's
  set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library (not loaded by llama-cpp-python)" FORCE)
endif()
