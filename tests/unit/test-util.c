/* test-util: parsing of sizes, durations, numbers and names. */
#include "check.h"
#include "amber/util.h"

int main(void)
{
    uint64_t v;
    CHECK_EQ(parse_size("4096", &v), 0); CHECK_EQ(v, 4096);
    CHECK_EQ(parse_size("10G", &v), 0); CHECK_EQ(v, 10ULL << 30);
    CHECK_EQ(parse_size("512MiB", &v), 0); CHECK_EQ(v, 512ULL << 20);
    CHECK_EQ(parse_size("1.5K", &v), 0); CHECK_EQ(v, 1536);
    CHECK_EQ(parse_size("2t", &v), 0); CHECK_EQ(v, 2ULL << 40);
    CHECK_EQ(parse_size("", &v), -EINVAL);
    CHECK_EQ(parse_size("-1", &v), -EINVAL);
    CHECK_EQ(parse_size("10X", &v), -EINVAL);
    CHECK_EQ(parse_size("1.5", &v), -EINVAL);
    CHECK_EQ(parse_size("99999999999P", &v), -ERANGE);
    CHECK_EQ(parse_size("18446744073709551616", &v), -ERANGE);
    CHECK_EQ(parse_duration_ms("10s", &v), 0); CHECK_EQ(v, 10000);
    CHECK_EQ(parse_duration_ms("1h30m", &v), 0); CHECK_EQ(v, 5400000);
    CHECK_EQ(parse_duration_ms("250ms", &v), 0); CHECK_EQ(v, 250);
    CHECK_EQ(parse_duration_ms("2", &v), 0); CHECK_EQ(v, 2000);
    CHECK_EQ(parse_duration_ms("5q", &v), -EINVAL);
    CHECK_EQ(parse_duration_ms("m", &v), -EINVAL);
    CHECK_EQ(parse_u64("12", &v), 0); CHECK_EQ(v, 12);
    CHECK_EQ(parse_u64("12a", &v), -EINVAL);
    CHECK_EQ(parse_u64(" 1", &v), -EINVAL);
    CHECK_EQ(name_validate("data-1.v_2"), 0);
    CHECK_EQ(name_validate(""), -EINVAL);
    CHECK_EQ(name_validate("a/b"), -EINVAL);
    CHECK_EQ(name_validate(".."), -EINVAL);
    CHECK_EQ(name_validate("-x"), -EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_EQ(name_validate(longname), -EINVAL);
    longname[63] = 0;
    CHECK_EQ(name_validate(longname), 0);
    char u[37];
    uuid_new(u);
    CHECK(uuid_is_valid(u));
    CHECK(!uuid_is_valid("not-a-uuid"));
    struct buf b = {0};
    buf_json_str(&b, "a\"b\\c\n\x01");
    CHECK_STR((char *)b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    buf_free(&b);
    return CHECK_DONE();
}
