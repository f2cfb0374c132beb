/* random_model.h - full-size models with random weights (random_model.c). */
#ifndef SHRUTI_TESTS_RANDOM_MODEL_H
#define SHRUTI_TESTS_RANDOM_MODEL_H

/* A small random value (uniform, |x| < 0.04), from a fixed seed. */
float sh_rand_normalish(void);

/* Restarts sh_rand_normalish's sequence at a state made from name: what
 * is drawn next (a model's weights, a test's mel) is then the same
 * whatever the process drew before it. */
void sh_rand_seed(const char *name);

/* header_path (a model-headers file) + random tensors -> out; an existing
 * out is kept (a cache between runs). 0, or -1 when a file fails. */
int sh_random_model_build(const char *header_path, const char *out);

/* The same with a token embedding of 5 rows repeated, exactly and a last
 * bit apart (near and exact ties in every logit). */
int sh_random_model_build_clustered(const char *header_path, const char *out);

#endif
