/*
 * Tests of the update slot's plan (test_slot.c), run by test-core.
 */
#ifndef TEST_SLOT_H
#define TEST_SLOT_H

void test_slot_run_all(void);

#endif /* TEST_SLOT_H */
