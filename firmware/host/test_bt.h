/*
 * Tests of what the Bluetooth glue decides (test_bt.c), run by test-core.
 */
#ifndef TEST_BT_H
#define TEST_BT_H

void test_bt_run_all(void);

#endif /* TEST_BT_H */
