// The token_command provider: a token from the command's first line; a command that hangs is killed after
// token_command_timeout_s with what it started, and no other thread waits on it longer than that; a cached token
// still valid serves others while one thread refreshes.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <signal.h>
#include <unistd.h>

extern "C" {
#include "dwb_config.h"
#include "dwb_http.h"
}

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Provider {
    dwb_auth *auth = nullptr;
    explicit Provider(const std::string &command, int timeout_s, int lifetime_s = 300) {
        EXPECT_EQ(dwb_http_global_init(nullptr), DWB_OK);
        dwb_auth_conf c;
        memset(&c, 0, sizeof c);
        c.type = DWB_AUTH_TOKEN_COMMAND;
        c.command = const_cast<char *>(command.c_str());
        c.token_lifetime_s = lifetime_s;
        c.token_command_timeout_s = timeout_s;
        dwb_error e = {};
        EXPECT_EQ(dwb_auth_token_provider_new(&c, "TEST", &auth, &e), DWB_OK) << e.message;
    }
    ~Provider() { dwb_auth_free(auth); }
    dwb_status header(int force, std::string *line, std::string *why = nullptr) {
        char buf[8192];
        dwb_error e = {};
        dwb_status st = dwb_auth_header(auth, force, buf, sizeof buf, &e);
        if (line) *line = st == DWB_OK ? buf : "";
        if (why) *why = e.message;
        return st;
    }
};

std::string tmp_path(const char *what) {
    char t[] = "/tmp/dwb-auth-XXXXXX";
    EXPECT_NE(mkdtemp(t), nullptr);
    return std::string(t) + "/" + what;
}

// Alive = exists and is not a zombie (a killed grandchild waits for init to reap it).
bool alive(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s;
    if (!std::getline(f, s)) return false;
    size_t r = s.rfind(')');
    return r != std::string::npos && r + 2 < s.size() && s[r + 2] != 'Z';
}

TEST(TokenCommand, FirstLineIsTheToken) {
    Provider p("printf 'tok-123 \\nsecond line\\n'", 5);
    std::string line, why;
    ASSERT_EQ(p.header(0, &line, &why), DWB_OK) << why;
    EXPECT_EQ(line, "Authorization: Bearer tok-123");
    Provider bad("echo oops; exit 3", 5);
    EXPECT_EQ(bad.header(0, &line, &why), DWB_E_AUTH);
    EXPECT_NE(why.find("status 3"), std::string::npos) << why;
    // The shell exits while a background child still holds stdout: the token is taken when the shell exits.
    std::string pidfile = tmp_path("pid");
    Provider bg("sleep 30 2>/dev/null & echo $! > " + pidfile + "; echo tok-bg", 5);
    auto t0 = Clock::now();
    EXPECT_EQ(bg.header(0, &line, &why), DWB_OK) << why;
    EXPECT_EQ(line, "Authorization: Bearer tok-bg");
    EXPECT_LT(since(t0), 3.0) << "waited for the background child instead of the shell";
    std::ifstream f(pidfile);
    pid_t child = 0;
    if (f >> child && child > 0) kill(child, SIGKILL);
}

TEST(TokenCommand, HangingCommandIsKilledAndNobodyWaitsLonger) {
    std::string pidfile = tmp_path("pid");
    // A shell that starts a long sleep and waits for it: both must die at the timeout.
    Provider p("sleep 60 & echo $! > " + pidfile + "; wait", 2);
    dwb_status first = DWB_OK, second = DWB_OK;
    double t_first = 0, t_second = 0;
    std::string why1, why2;
    auto t0 = Clock::now();
    std::thread a([&] {
        first = p.header(0, nullptr, &why1);
        t_first = since(t0);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto t1 = Clock::now();
    std::thread b([&] {
        second = p.header(0, nullptr, &why2);
        t_second = since(t1);
    });
    a.join();
    b.join();
    EXPECT_EQ(first, DWB_E_AUTH);
    EXPECT_NE(why1.find("did not finish within 2 s"), std::string::npos) << why1;
    EXPECT_LT(t_first, 4.0) << "the command ran past its 2 s timeout";
    EXPECT_NE(second, DWB_OK) << "there is no token to give the second caller";
    EXPECT_LT(t_second, 4.5) << "the second caller was blocked past the timeout";
    std::ifstream f(pidfile);
    pid_t child = 0;
    ASSERT_TRUE(f >> child) << "the command did not start";
    for (int i = 0; i < 50 && alive(child); i++) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(alive(child)) << "the command's child " << child << " survived the timeout";
}

TEST(TokenCommand, CachedTokenServesWhileARefreshHangs) {
    std::string flag = tmp_path("flag");
    // First run prints a token; every later run hangs.
    Provider p("if [ -e " + flag + " ]; then exec sleep 60; fi; touch " + flag + "; echo tok-1", 2);
    std::string line, why;
    ASSERT_EQ(p.header(0, &line, &why), DWB_OK) << why;
    EXPECT_EQ(line, "Authorization: Bearer tok-1");
    // A 401 forces a refresh, which hangs; another thread meanwhile still gets the cached token at once.
    dwb_status forced = DWB_OK;
    std::thread a([&] { forced = p.header(1, nullptr, nullptr); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto t1 = Clock::now();
    std::string other;
    EXPECT_EQ(p.header(0, &other, &why), DWB_OK) << why;
    EXPECT_LT(since(t1), 0.5) << "blocked behind the refresh although the cached token is valid";
    EXPECT_EQ(other, "Authorization: Bearer tok-1");
    a.join();
    EXPECT_EQ(forced, DWB_E_AUTH) << "the hung refresh after a 401 must fail";
    // The cached token stays in use after the failed refresh.
    EXPECT_EQ(p.header(0, &line, &why), DWB_OK) << why;
    EXPECT_EQ(line, "Authorization: Bearer tok-1");
}

} // namespace
