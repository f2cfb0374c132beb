/* model_store.h - models by name: the published names, the local cache,
 * and downloads. */
#ifndef SHRUTI_MODEL_STORE_H
#define SHRUTI_MODEL_STORE_H

#include "shruti.h"

#define SHRUTI_DEFAULT_MODEL_BASE_URL "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"

#endif
