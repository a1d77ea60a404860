/*
 * Delta updates through the core (test_patch.c), run by test-core.
 */
#ifndef TEST_PATCH_H
#define TEST_PATCH_H

void test_patch_run_all(void);

#endif /* TEST_PATCH_H */
