// HTTP client against a tiny scripted HTTP/1.1 server in the test: retries on 503/429 with Retry-After,
// budget exhaustion, connection refused, a body cut mid-way (not retried), 401 refresh, auth headers on the
// wire, cancellation, size limits, streamed uploads rewound on retry, and keep-alive reuse within a thread, concurrent threads.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_upstream.h"
}

namespace {

struct Reply {
    int status;
    std::string body;
    std::vector<std::string> headers;
    bool cut;      // announce more bytes than sent, then close
    bool drop;     // close without answering
    int delay_ms;
    Reply(int s = 200, std::string b = "", std::vector<std::string> h = {}, bool c = false, bool d = false,
          int delay = 0)
        : status(s), body(std::move(b)), headers(std::move(h)), cut(c), drop(d), delay_ms(delay) {}
};

struct Seen {
    std::string method, path, headers, body;
    int conn_id;
};

class MiniServer {
  public:
    MiniServer() {
        fd_ = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a = {};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(fd_, (sockaddr *)&a, sizeof a);
        socklen_t len = sizeof a;
        getsockname(fd_, (sockaddr *)&a, &len);
        port_ = ntohs(a.sin_port);
        listen(fd_, 16);
        th_ = std::thread([this] { accept_loop(); });
    }
    ~MiniServer() {
        stop_ = true;
        shutdown(fd_, SHUT_RDWR);
        close(fd_);
        th_.join();
        {
            // The client's pool keeps connections open: wake the connection threads.
            std::lock_guard<std::mutex> lk(mu_);
            for (int c : fds_)
                if (c >= 0) shutdown(c, SHUT_RDWR);
        }
        for (auto &t : conns_) t.join();
    }
    void script(std::vector<Reply> r) {
        std::lock_guard<std::mutex> lk(mu_);
        replies_.assign(r.begin(), r.end());
    }
    void fallback(Reply r) {
        std::lock_guard<std::mutex> lk(mu_);
        fallback_ = r;
    }
    std::vector<Seen> seen() {
        std::lock_guard<std::mutex> lk(mu_);
        return seen_;
    }
    // Waits until n requests have arrived (an event, not a guess at how long a thread takes to get there).
    bool wait_seen(size_t n, int timeout_ms = 10000) {
        std::unique_lock<std::mutex> lk(mu_);
        return seen_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return seen_.size() >= n; });
    }
    // Ends the delay of every reply being held now or later: a test holds a request for as long as it needs.
    void release() { released_ = true; }
    // Requests whose path starts with prefix are held until release(), whatever their reply; others are not.
    void hold(const std::string &prefix) {
        std::lock_guard<std::mutex> lk(mu_);
        hold_ = prefix;
    }
    std::string url(const std::string &path) { return "http://127.0.0.1:" + std::to_string(port_) + path; }
    int connections() const { return conn_count_.load(); }

  private:
    void accept_loop() {
        while (!stop_) {
            int c = accept(fd_, nullptr, nullptr);
            if (c < 0) break;
            int id = ++conn_count_;
            {
                std::lock_guard<std::mutex> lk(mu_);
                fds_.push_back(c);
            }
            conns_.emplace_back([this, c, id] { serve(c, id); });
        }
    }
    static bool read_until(int c, std::string &buf, const char *delim) {
        char tmp[4096];
        while (buf.find(delim) == std::string::npos) {
            ssize_t n = recv(c, tmp, sizeof tmp, 0);
            if (n <= 0) return false;
            buf.append(tmp, (size_t)n);
        }
        return true;
    }
    void serve(int c, int id) {
        std::string buf;
        for (;;) {
            if (!read_until(c, buf, "\r\n\r\n")) break;
            size_t hend = buf.find("\r\n\r\n");
            std::string head = buf.substr(0, hend);
            buf.erase(0, hend + 4);
            Seen s;
            s.conn_id = id;
            s.method = head.substr(0, head.find(' '));
            s.path = head.substr(head.find(' ') + 1, head.find(' ', head.find(' ') + 1) - head.find(' ') - 1);
            s.headers = head;
            std::string lower = head;
            for (auto &ch : lower) ch = (char)tolower(ch);
            size_t cl = lower.find("content-length:");
            if (cl != std::string::npos) {
                size_t n = std::stoul(head.substr(cl + 15));
                char tmp[4096];
                while (buf.size() < n) {
                    ssize_t r = recv(c, tmp, sizeof tmp, 0);
                    if (r <= 0) break;
                    buf.append(tmp, (size_t)r);
                }
                s.body = buf.substr(0, n);
                buf.erase(0, n);
            } else if (lower.find("transfer-encoding: chunked") != std::string::npos) {
                for (;;) {
                    if (!read_until(c, buf, "\r\n")) break;
                    size_t le = buf.find("\r\n");
                    size_t n = std::stoul(buf.substr(0, le), nullptr, 16);
                    buf.erase(0, le + 2);
                    char tmp[4096];
                    while (buf.size() < n + 2) {
                        ssize_t r = recv(c, tmp, sizeof tmp, 0);
                        if (r <= 0) break;
                        buf.append(tmp, (size_t)r);
                    }
                    s.body += buf.substr(0, n);
                    buf.erase(0, n + 2);
                    if (n == 0) break;
                }
            }
            Reply r;
            bool held;
            {
                std::lock_guard<std::mutex> lk(mu_);
                held = !hold_.empty() && s.path.compare(0, hold_.size(), hold_) == 0;
                seen_.push_back(s);
                seen_cv_.notify_all();
                if (!replies_.empty()) {
                    r = replies_.front();
                    replies_.pop_front();
                } else {
                    r = fallback_;
                }
            }
            while (held && !stop_ && !released_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            for (int waited = 0; waited < r.delay_ms && !stop_ && !released_; waited += 10)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            if (r.drop) break;
            std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\n";
            for (auto &h : r.headers) out += h + "\r\n";
            out += "Content-Length: " + std::to_string(r.body.size() + (r.cut ? 1000 : 0)) + "\r\n\r\n" + r.body;
            send(c, out.data(), out.size(), MSG_NOSIGNAL);
            if (r.cut) break;
        }
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (auto &f : fds_)
                if (f == c) f = -1;
        }
        close(c);
    }

    int fd_;
    int port_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> released_{false};
    std::condition_variable seen_cv_;
    std::atomic<int> conn_count_{0};
    std::thread th_;
    std::vector<std::thread> conns_;
    std::mutex mu_;
    std::deque<Reply> replies_;
    Reply fallback_;
    std::string hold_;
    std::vector<Seen> seen_;
    std::vector<int> fds_;
};

class Http : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dwb_error e = {};
        ASSERT_EQ(dwb_http_global_init(&e), DWB_OK) << e.message;
        dwb_log_init(DWB_LOG_OFF, DWB_LOG_TEXT);
    }
    dwb_http_client *client(int retries = 3, long budget_ms = 5000, dwb_auth *auth = nullptr) {
        dwb_http_client_opts o = {};
        o.name = "TESTSTORE";
        o.connect_timeout_ms = 2000;
        o.timeout_ms = 10000;
        o.low_speed_time_s = 5;
        o.tls_verify = 1;
        o.max_retries = retries;
        o.retry_budget_ms = budget_ms;
        o.backoff_initial_ms = 5;
        o.backoff_max_ms = 20;
        o.auth = auth;
        dwb_http_client *c = nullptr;
        dwb_error e = {};
        EXPECT_EQ(dwb_http_client_new(&o, &c, &e), DWB_OK) << e.message;
        clients_.push_back(c);
        return c;
    }
    void TearDown() override {
        for (auto *c : clients_) dwb_http_client_free(c);
    }
    std::vector<dwb_http_client *> clients_;
};

struct Sink {
    std::string body;
    int responses = 0;
    long code = 0;
};
int sink_body(void *ud, const void *d, size_t n) {
    static_cast<Sink *>(ud)->body.append((const char *)d, n);
    return 0;
}
int sink_response(void *ud, long code, const char *) {
    static_cast<Sink *>(ud)->responses++;
    static_cast<Sink *>(ud)->code = code;
    return 0;
}

dwb_status get(dwb_http_client *c, const std::string &url, Sink *s, dwb_http_response *r, dwb_error *e) {
    dwb_http_request q = {};
    q.url = url.c_str();
    q.on_body = sink_body;
    q.on_response = sink_response;
    q.ud = s;
    return dwb_http_perform(c, &q, r, e);
}

TEST_F(Http, Retries503ThenSucceeds) {
    MiniServer srv;
    srv.script({{503, "busy"}, {200, "[{}]"}});
    Sink s;
    dwb_http_response r = {};
    dwb_error e = {};
    ASSERT_EQ(get(client(), srv.url("/studies"), &s, &r, &e), DWB_OK) << e.message;
    EXPECT_EQ(r.code, 200);
    EXPECT_EQ(r.attempts, 2);
    EXPECT_EQ(s.body, "[{}]") << "the 503 body must not reach on_body";
    EXPECT_EQ(s.responses, 1) << "on_response is for the final response only";
    EXPECT_EQ(s.code, 200);
    EXPECT_EQ(srv.seen().size(), 2u);
    EXPECT_EQ(r.request_id[0], 'h');
    dwb_http_response_cleanup(&r);
}

TEST_F(Http, GivesUpAfterRetriesWithClearError) {
    MiniServer srv;
    srv.fallback({503, "store overloaded"});
    Sink s;
    dwb_http_response r = {};
    dwb_error e = {};
    EXPECT_EQ(get(client(2), srv.url("/studies"), &s, &r, &e), DWB_E_HTTP);
    EXPECT_EQ(e.http_code, 503);
    EXPECT_EQ(r.attempts, 3);
    std::string m = e.message;
    EXPECT_NE(m.find("HTTP 503"), std::string::npos) << m;
    EXPECT_NE(m.find("HTTP 503 after 3 attempts in "), std::string::npos) << m;
    EXPECT_NE(m.find("store overloaded"), std::string::npos) << m;
    EXPECT_NE(m.find("no retries left"), std::string::npos) << m;
    EXPECT_EQ(srv.seen().size(), 3u);
    dwb_http_response_cleanup(&r);
}

TEST_F(Http, RetryBudgetBoundsTheWait) {
    MiniServer srv;
    // Retry-After of 2 s with a 1 s budget: the client must give up instead of waiting.
    srv.fallback({429, "slow down", {"Retry-After: 2"}});
    Sink s;
    dwb_error e = {};
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(get(client(10, 1000), srv.url("/x"), &s, nullptr, &e), DWB_E_HTTP);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_NE(std::string(e.message).find("retry budget exhausted"), std::string::npos) << e.message;
    EXPECT_EQ(srv.seen().size(), 1u);
}

TEST_F(Http, HonoursRetryAfterWithinBudget) {
    MiniServer srv;
    srv.script({{429, "", {"Retry-After: 1"}}, {200, "ok"}});
    Sink s;
    dwb_http_response r = {};
    dwb_error e = {};
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(get(client(3, 5000), srv.url("/x"), &s, &r, &e), DWB_OK) << e.message;
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900)) << "Retry-After: 1 ignored";
    EXPECT_EQ(r.attempts, 2);
    dwb_http_response_cleanup(&r);
}

TEST_F(Http, ConnectionRefusedAfterRetries) {
    int port;
    {
        MiniServer probe; // find a port that is free now
        port = std::stoi(probe.url("").substr(17));
    }
    Sink s;
    dwb_http_response r = {};
    dwb_error e = {};
    EXPECT_EQ(get(client(2), "http://127.0.0.1:" + std::to_string(port) + "/x", &s, &r, &e), DWB_E_CONNECT);
    EXPECT_EQ(r.attempts, 3);
    EXPECT_NE(std::string(e.message).find("127.0.0.1"), std::string::npos) << e.message;
    dwb_http_response_cleanup(&r);
}

TEST_F(Http, BodyCutMidwayIsNotRetried) {
    MiniServer srv;
    srv.script({{200, std::string(5000, 'x'), {}, true}});
    srv.fallback({200, "second"});
    Sink s;
    dwb_error e = {};
    EXPECT_EQ(get(client(3), srv.url("/wado"), &s, nullptr, &e), DWB_E_CONNECT);
    EXPECT_EQ(s.body.size(), 5000u);
    EXPECT_EQ(srv.seen().size(), 1u) << "a request whose body was partly delivered must not be replayed";
    EXPECT_NE(std::string(e.message).find("part of the body"), std::string::npos) << e.message;
}

TEST_F(Http, NotFoundIsFinalWithStoreMessage) {
    MiniServer srv;
    srv.script({{404, "{\"error\": \"no such study\"}"}});
    Sink s;
    dwb_error e = {};
    EXPECT_EQ(get(client(3), srv.url("/studies/1.2.3"), &s, nullptr, &e), DWB_E_HTTP);
    EXPECT_EQ(e.http_code, 404);
    EXPECT_NE(std::string(e.message).find("no such study"), std::string::npos) << e.message;
    EXPECT_EQ(srv.seen().size(), 1u);
    EXPECT_EQ(s.responses, 1);
    EXPECT_EQ(s.code, 404);
    EXPECT_EQ(s.body, "") << "a non-2xx body goes to error_body, not on_body";
}

struct Refresh {
    std::atomic<int> calls{0}, forced{0};
};
dwb_status refresh_hook(void *ud, int force, char *buf, size_t n, dwb_error *) {
    Refresh *r = static_cast<Refresh *>(ud);
    r->calls++;
    if (force) r->forced++;
    snprintf(buf, n, "Authorization: Bearer token-%d", r->forced.load());
    return DWB_OK;
}

TEST_F(Http, Unauthorized401RefreshesOnce) {
    MiniServer srv;
    srv.script({{401, "expired"}, {200, "ok"}});
    Refresh rf;
    dwb_auth *a = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_auth_new(refresh_hook, &rf, nullptr, &a, &e), DWB_OK);
    Sink s;
    dwb_http_response r = {};
    EXPECT_EQ(get(client(0, 0, a), srv.url("/x"), &s, &r, &e), DWB_OK) << e.message;
    EXPECT_EQ(rf.forced.load(), 1);
    EXPECT_EQ(r.attempts, 2);
    dwb_http_response_cleanup(&r);
    auto seen = srv.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_NE(seen[0].headers.find("Bearer token-0"), std::string::npos);
    EXPECT_NE(seen[1].headers.find("Bearer token-1"), std::string::npos);
    dwb_auth_free(a);
}

TEST_F(Http, Second401IsAnAuthErrorNamingTheUpstream) {
    MiniServer srv;
    srv.fallback({401, "revoked"});
    Refresh rf;
    dwb_auth *a = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_auth_new(refresh_hook, &rf, nullptr, &a, &e), DWB_OK);
    Sink s;
    EXPECT_EQ(get(client(3, 5000, a), srv.url("/x"), &s, nullptr, &e), DWB_E_AUTH);
    EXPECT_NE(std::string(e.message).find("TESTSTORE"), std::string::npos) << e.message;
    EXPECT_EQ(srv.seen().size(), 2u);
    dwb_auth_free(a);
}

TEST_F(Http, BearerAndBasicOnTheWire) {
    MiniServer srv;
    srv.fallback({200, "ok"});
    dwb_auth_conf bearer = {};
    bearer.type = DWB_AUTH_BEARER;
    bearer.token.value = (char *)"abc.def";
    dwb_auth_conf basic = {};
    basic.type = DWB_AUTH_BASIC;
    basic.username = (char *)"Aladdin";
    basic.password.value = (char *)"open sesame";
    dwb_auth *a1 = nullptr, *a2 = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_auth_from_conf(&bearer, &a1, &e), DWB_OK);
    ASSERT_EQ(dwb_auth_from_conf(&basic, &a2, &e), DWB_OK);
    Sink s;
    ASSERT_EQ(get(client(0, 0, a1), srv.url("/a"), &s, nullptr, &e), DWB_OK);
    ASSERT_EQ(get(client(0, 0, a2), srv.url("/b"), &s, nullptr, &e), DWB_OK);
    auto seen = srv.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_NE(seen[0].headers.find("Authorization: Bearer abc.def"), std::string::npos) << seen[0].headers;
    // RFC 7617's example credentials.
    EXPECT_NE(seen[1].headers.find("Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), std::string::npos)
        << seen[1].headers;
    dwb_auth_free(a1);
    dwb_auth_free(a2);
}

TEST_F(Http, CancelStopsAWaitingRequest) {
    MiniServer srv;
    srv.fallback({200, "late", {}, false, false, 4000});
    std::atomic<bool> flag{false};
    dwb_http_request q = {};
    std::string url = srv.url("/slow");
    q.url = url.c_str();
    q.is_cancelled = [](void *ud) -> int { return static_cast<std::atomic<bool> *>(ud)->load() ? 1 : 0; };
    q.ud = &flag;
    std::thread t([&] {
        srv.wait_seen(1); // cancel once the request is on the wire, not after a guessed delay
        flag = true;
    });
    dwb_error e = {};
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(dwb_http_perform(client(), &q, nullptr, &e), DWB_E_CANCELLED);
    // The server answers after 4 s; polling every ~100 ms must notice the flag long before.
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2000));
    t.join();
}

TEST_F(Http, CancelDuringBackoff) {
    MiniServer srv;
    srv.fallback({503, "busy", {"Retry-After: 30"}});
    std::atomic<bool> flag{false};
    dwb_http_request q = {};
    std::string url = srv.url("/slow");
    q.url = url.c_str();
    q.is_cancelled = [](void *ud) -> int { return static_cast<std::atomic<bool> *>(ud)->load() ? 1 : 0; };
    q.ud = &flag;
    std::thread t([&] {
        srv.wait_seen(1); // cancel once the request is on the wire, not after a guessed delay
        flag = true;
    });
    dwb_error e = {};
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(dwb_http_perform(client(3, 60000), &q, nullptr, &e), DWB_E_CANCELLED);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_EQ(srv.seen().size(), 1u);
    t.join();
}

TEST_F(Http, GetBufferRefusesOversizedBodies) {
    MiniServer srv;
    srv.script({{200, std::string(10000, 'a')}, {200, "small"}});
    char *body = nullptr;
    size_t len = 0;
    dwb_error e = {};
    EXPECT_EQ(dwb_http_get_buffer(client(), srv.url("/big").c_str(), "application/dicom+json", 4096, &body, &len,
                                  nullptr, &e),
              DWB_E_LIMIT);
    EXPECT_EQ(body, nullptr);
    ASSERT_EQ(dwb_http_get_buffer(client(), srv.url("/small").c_str(), "application/dicom+json", 4096, &body, &len,
                                  nullptr, &e),
              DWB_OK)
        << e.message;
    EXPECT_EQ(std::string(body, len), "small");
    EXPECT_NE(srv.seen()[1].headers.find("Accept: application/dicom+json"), std::string::npos);
    free(body);
}

struct Upload {
    std::string data;
    size_t pos = 0;
    int rewinds = 0;
};

TEST_F(Http, StreamedUploadIsRewoundForARetry) {
    MiniServer srv;
    srv.script({{503, "later"}, {200, "stored"}});
    Upload up;
    for (int i = 0; i < 20000; i++) up.data += (char)('a' + i % 26);
    dwb_http_body_reader rd = {};
    rd.read = [](void *ud, char *buf, size_t len) -> size_t {
        Upload *u = static_cast<Upload *>(ud);
        size_t n = std::min(len, u->data.size() - u->pos);
        memcpy(buf, u->data.data() + u->pos, n);
        u->pos += n;
        return n;
    };
    rd.rewind = [](void *ud) -> int {
        Upload *u = static_cast<Upload *>(ud);
        u->pos = 0;
        u->rewinds++;
        return 0;
    };
    rd.ud = &up;
    rd.size = -1; // chunked
    dwb_http_request q = {};
    std::string url = srv.url("/studies");
    q.method = "POST";
    q.url = url.c_str();
    q.reader = &rd;
    dwb_error e = {};
    ASSERT_EQ(dwb_http_perform(client(), &q, nullptr, &e), DWB_OK) << e.message;
    auto seen = srv.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].body, up.data);
    EXPECT_EQ(seen[1].body, up.data);
    EXPECT_EQ(up.rewinds, 1);
}

TEST_F(Http, SequentialRequestsFromOneThreadReuseOneConnection) {
    MiniServer srv;
    srv.fallback({200, "ok"});
    dwb_http_client *c = client();
    std::thread t([&] {
        for (int i = 0; i < 10; i++) {
            Sink s;
            dwb_error e = {};
            EXPECT_EQ(get(c, srv.url("/r"), &s, nullptr, &e), DWB_OK) << e.message;
        }
    });
    t.join();
    EXPECT_EQ(srv.seen().size(), 10u);
    EXPECT_EQ(srv.connections(), 1) << "10 sequential requests from one thread should use one kept-alive connection";
}

TEST_F(Http, ConcurrentRequestsFromSeveralThreads) {
    MiniServer srv;
    srv.fallback({200, "ok"});
    dwb_http_client *c = client();
    std::vector<std::thread> ts;
    std::atomic<int> ok{0};
    for (int t = 0; t < 6; t++) {
        ts.emplace_back([&] {
            for (int i = 0; i < 10; i++) {
                Sink s;
                dwb_error e = {};
                if (get(c, srv.url("/r"), &s, nullptr, &e) == DWB_OK) ok++;
                else ADD_FAILURE() << e.message;
            }
        });
    }
    for (auto &t : ts) t.join();
    EXPECT_EQ(ok.load(), 60);
    EXPECT_EQ(srv.seen().size(), 60u);
    // Each thread keeps its own connection alive: 60 requests, about one connection per thread.
    EXPECT_LE(srv.connections(), 6) << "6 threads x 10 requests: one pooled connection per thread expected";
}

TEST_F(Http, ConcurrencyCapSerialisesRequests) {
    MiniServer srv;
    srv.fallback({200, "ok", {}, false, false, 50});
    dwb_http_client_opts o = {};
    o.name = "CAPPED";
    o.max_concurrent = 1;
    dwb_http_client *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_http_client_new(&o, &c, &e), DWB_OK) << e.message;
    clients_.push_back(c);
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; t++) {
        ts.emplace_back([&] {
            for (int i = 0; i < 3; i++) {
                Sink s;
                dwb_error e2 = {};
                EXPECT_EQ(get(c, srv.url("/r"), &s, nullptr, &e2), DWB_OK) << e2.message;
            }
        });
    }
    for (auto &t : ts) t.join();
    EXPECT_EQ(srv.seen().size(), 9u);
    // Connections are pooled per thread (libcurl cannot share one cache between threads safely).
    EXPECT_LE(srv.connections(), 3) << "with max_concurrent=1, one kept-alive connection per thread";
}

TEST_F(Http, CancelWhileWaitingForASlot) {
    MiniServer srv;
    // The busy request is held by the server until the test releases it (30 s only as a backstop).
    srv.fallback({200, "ok", {}, false, false, 30000});
    dwb_http_client_opts o = {};
    o.name = "CAPPED";
    o.max_concurrent = 1;
    dwb_http_client *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_http_client_new(&o, &c, &e), DWB_OK) << e.message;
    clients_.push_back(c);
    std::atomic<bool> busy_done{false};
    std::thread busy([&] {
        Sink s;
        dwb_error e2 = {};
        EXPECT_EQ(get(c, srv.url("/busy"), &s, nullptr, &e2), DWB_OK) << e2.message;
        busy_done = true;
    });
    // Once the server has the busy request, it holds the only slot.
    ASSERT_TRUE(srv.wait_seen(1)) << "the busy request never reached the server";
    // The client polls is_cancelled only while it waits for a slot: answer "not yet" on the first poll and
    // "cancelled" on the next, so the request has really waited before it is cancelled.
    std::atomic<int> polls{0};
    dwb_http_request q = {};
    std::string url = srv.url("/queued");
    q.url = url.c_str();
    q.is_cancelled = [](void *ud) -> int { return static_cast<std::atomic<int> *>(ud)->fetch_add(1) >= 1 ? 1 : 0; };
    q.ud = &polls;
    EXPECT_EQ(dwb_http_perform(c, &q, nullptr, &e), DWB_E_CANCELLED);
    EXPECT_FALSE(busy_done.load()) << "the cancelled request returned only after the slot was free";
    EXPECT_GE(polls.load(), 2) << "expected the request to wait for the slot before the cancel";
    EXPECT_NE(std::string(e.message).find("free slot"), std::string::npos) << e.message;
    srv.release();
    busy.join();
    EXPECT_TRUE(busy_done.load());
    for (auto &r : srv.seen()) EXPECT_NE(r.path, "/queued") << "a cancelled queued request must not be sent";
}

TEST(HttpGate, TransfersLeaveAQuarterOfTheSlotsToQueries) {
    struct {
        int max_concurrent, transfer_slots;
    } const cases[] = {{0, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 3}, {5, 3}, {16, 12}, {1024, 768}};
    for (const auto &c : cases)
        EXPECT_EQ(dwb_http_transfer_slots(c.max_concurrent), c.transfer_slots) << "max_concurrent " << c.max_concurrent;
}

TEST_F(Http, QueryDoesNotWaitBehindTransfers) {
    MiniServer srv;
    srv.hold("/bulk"); // transfers take as long as the test wants
    srv.fallback({200, "[]"});
    dwb_http_client_opts o = {};
    o.name = "GATED";
    o.max_concurrent = 4; // 3 slots for transfers, 1 kept for queries
    dwb_http_client *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_http_client_new(&o, &c, &e), DWB_OK) << e.message;
    clients_.push_back(c);
    std::atomic<int> transfers_done{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 5; t++) { // more transfers than slots, as with 10 C-MOVEs of 4 series each
        ts.emplace_back([&] {
            Sink s;
            dwb_http_request r = {};
            std::string url = srv.url("/bulk");
            r.url = url.c_str();
            r.transfer = 1;
            r.on_body = [](void *ud, const void *d, size_t n) -> int {
                static_cast<Sink *>(ud)->body.append((const char *)d, n);
                return 0;
            };
            r.ud = &s;
            dwb_error e2 = {};
            EXPECT_EQ(dwb_http_perform(c, &r, nullptr, &e2), DWB_OK) << e2.message;
            transfers_done++;
        });
    }
    ASSERT_TRUE(srv.wait_seen(3)) << "the transfers never reached the server";
    // The query gives up after 10 s (a backstop, far above the milliseconds it takes): without a share of its
    // own it would wait for a transfer that the server holds until the end of the test.
    auto t0 = std::chrono::steady_clock::now();
    dwb_http_request q = {};
    std::string url = srv.url("/studies?PatientID=1");
    q.url = url.c_str();
    q.is_cancelled = [](void *ud) -> int {
        return std::chrono::steady_clock::now() - *static_cast<std::chrono::steady_clock::time_point *>(ud) >
               std::chrono::seconds(10);
    };
    q.ud = &t0;
    EXPECT_EQ(dwb_http_perform(c, &q, nullptr, &e), DWB_OK) << "the query waited behind the transfers: " << e.message;
    EXPECT_EQ(transfers_done.load(), 0) << "a transfer ended before the query, so the query proved nothing";
    size_t bulk = 0;
    for (auto &r : srv.seen()) bulk += r.path == "/bulk";
    EXPECT_EQ(bulk, 3u) << "transfers in flight with max_concurrent 4: at most 3, one slot stays for queries";
    srv.release();
    for (auto &t : ts) t.join();
    EXPECT_EQ(transfers_done.load(), 5);
}

std::vector<std::string> g_lines;
std::mutex g_lines_mu;

TEST_F(Http, LogsNeitherCredentialsNorUserinfo) {
    MiniServer srv;
    srv.script({{503, "busy"}, {500, "boom"}});
    dwb_auth_conf bearer = {};
    bearer.type = DWB_AUTH_BEARER;
    bearer.token.value = (char *)"SECRET-TOKEN";
    dwb_auth *a = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_auth_from_conf(&bearer, &a, &e), DWB_OK);
    g_lines.clear();
    dwb_log_set_sink(
        [](void *, const char *line) {
            std::lock_guard<std::mutex> lk(g_lines_mu);
            g_lines.push_back(line);
        },
        nullptr);
    dwb_log_init(DWB_LOG_DEBUG, DWB_LOG_TEXT);
    std::string url = srv.url("/x");
    url.insert(7, "alice:PASSWORD@");
    Sink s;
    dwb_http_response r = {};
    dwb_status st = get(client(3, 5000, a), url, &s, &r, &e);
    dwb_log_init(DWB_LOG_OFF, DWB_LOG_TEXT);
    dwb_log_set_sink(nullptr, nullptr);
    EXPECT_EQ(st, DWB_E_HTTP);
    EXPECT_EQ(std::string(e.message).find("PASSWORD"), std::string::npos) << e.message;
    bool retry_line = false, final_line = false;
    for (auto &l : g_lines) {
        EXPECT_EQ(l.find("PASSWORD"), std::string::npos) << l;
        EXPECT_EQ(l.find("SECRET-TOKEN"), std::string::npos) << l;
        if (l.find("retry 1/3") != std::string::npos) retry_line = true;
        if (l.find("HTTP 500") != std::string::npos && l.find("boom") != std::string::npos) final_line = true;
        EXPECT_NE(l.find(r.request_id), std::string::npos) << "every line names the request: " << l;
        EXPECT_NE(l.find("TESTSTORE"), std::string::npos) << "every line names the upstream: " << l;
    }
    EXPECT_TRUE(retry_line) << "one line per retry";
    EXPECT_TRUE(final_line) << "one line on the final failure";
    auto seen = srv.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_NE(seen[0].headers.find("Authorization: Bearer SECRET-TOKEN"), std::string::npos)
        << "the configured auth header wins over URL userinfo: " << seen[0].headers;
    EXPECT_EQ(seen[0].headers.find("Basic"), std::string::npos) << seen[0].headers;
    dwb_http_response_cleanup(&r);
    dwb_auth_free(a);
}

TEST(HttpPure, BackoffTable) {
    dwb_http_client_opts o = {};
    o.backoff_initial_ms = 100;
    o.backoff_max_ms = 1000;
    struct {
        int attempt;
        long retry_after;
        double jitter;
        long expected;
    } rows[] = {
        {1, -1, 0.999, 99}, {2, -1, 0.5, 100}, {3, -1, 0.5, 200}, {4, -1, 0.999, 799},
        {5, -1, 0.999, 999}, {30, -1, 0.5, 500}, {1, 3000, 0.1, 3000}, {1, 0, 0.5, 0}, {2, -1, 0.0, 1},
    };
    for (auto &r : rows)
        EXPECT_EQ(dwb_http_backoff_ms(&o, r.attempt, r.retry_after, r.jitter), r.expected)
            << "attempt " << r.attempt << " retry-after " << r.retry_after << " jitter " << r.jitter;
}

TEST(HttpPure, RetryAfterTable) {
    // 1994-11-06 08:49:37 GMT = 784111777
    const long long now = 784111777LL - 10;
    struct {
        const char *v;
        long expected;
    } rows[] = {
        {"120", 120000}, {" 5 ", 5000}, {"0", 0}, {"-3", -1}, {"abc", -1}, {"", -1},
        {"Sun, 06 Nov 1994 08:49:37 GMT", 10000}, {"Sun, 06 Nov 1994 08:49:00 GMT", 0}, {"99999999", -1},
    };
    for (auto &r : rows) EXPECT_EQ(dwb_http_parse_retry_after(r.v, now), r.expected) << "'" << r.v << "'";
}

// The store's own words out of the error bodies stores send, for an ErrorComment.
TEST(HttpErrorText, QuotesTheStoresMessage) {
    struct {
        const char *body, *text;
    } rows[] = {
        {R"([{"error": {"code": 400, "message": "invalid QIDO-RS query: unsupported attribute StudyID", "status": "INVALID_ARGUMENT"}}])",
         "invalid QIDO-RS query: unsupported attribute StudyID"},
        {R"({"error": {"code": 400, "message": "bad\nrequest"}})", "bad request"},
        {R"({"HttpError": "Bad Request", "HttpStatus": 400, "Message": "Bad request", "Details": "Unknown tag 0008,3002"})",
         "Unknown tag 0008,3002"},
        {R"({"HttpStatus": 400, "Message": "Bad request"})", "Bad request"},
        {R"({"error": "not searchable"})", "not searchable"},
        {R"({"other": 1})", R"({"other": 1})"},
        {"  plain\ttext\r\n refusal ", "plain text refusal"},
        {"{ not json", "{ not json"},
        {"caf\xc3\xa9", "caf??"},
        {"", ""},
        {nullptr, ""},
    };
    for (auto &r : rows) {
        char out[128];
        dwb_http_error_text(r.body, out, sizeof out);
        EXPECT_STREQ(out, r.text) << (r.body ? r.body : "(null)");
    }
    char small[8];
    dwb_http_error_text("a long refusal text", small, sizeof small);
    EXPECT_STREQ(small, "a long") << "cut at the buffer, no dangling space";
}

// Refused QIDO filters are remembered per upstream and resource; many associations learn at once and exactly
// one of them logs each filter.
TEST_F(Http, UpstreamRemembersRefusedFiltersOncePerResource) {
    dwb_upstream_conf conf = {};
    snprintf(conf.ae_title, sizeof conf.ae_title, "IDC");
    conf.base_url = const_cast<char *>("http://127.0.0.1:9/dicom-web");
    conf.tls_verify = 1;
    conf.max_concurrent_requests = 4;
    dwb_upstream *up = nullptr, *other = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_upstream_new(&conf, &up, &e), DWB_OK) << e.message;
    ASSERT_EQ(dwb_upstream_new(&conf, &other, &e), DWB_OK) << e.message;
    const uint32_t STUDYID = 0x00200010, CLS = 0x00080016;
    EXPECT_EQ(dwb_upstream_filter_refused(up, "studies", STUDYID), 0);
    std::atomic<int> firsts{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 16; i++)
        th.emplace_back([&] {
            for (int k = 0; k < 100; k++) firsts += dwb_upstream_note_refused_filter(up, "studies", STUDYID);
        });
    for (auto &t : th) t.join();
    EXPECT_EQ(firsts.load(), 1) << "one refusal, logged once";
    EXPECT_EQ(dwb_upstream_filter_refused(up, "studies", STUDYID), 1);
    EXPECT_EQ(dwb_upstream_filter_refused(up, "series", STUDYID), 0) << "per resource";
    EXPECT_EQ(dwb_upstream_filter_refused(up, "studies", CLS), 0);
    EXPECT_EQ(dwb_upstream_filter_refused(other, "studies", STUDYID), 0) << "per upstream";
    EXPECT_EQ(dwb_upstream_note_refused_filter(up, "instances", CLS), 1);
    EXPECT_EQ(dwb_upstream_filter_refused(up, "instances", CLS), 1);
    // The table is bounded: beyond it nothing is recorded (and nothing logged again and again).
    int added = 0;
    for (uint32_t t = 1; t <= 2 * DWB_UPSTREAM_MAX_REFUSED; t++) added += dwb_upstream_note_refused_filter(up, "series", t);
    EXPECT_EQ(added, DWB_UPSTREAM_MAX_REFUSED - 2);
    dwb_upstream_free(up);
    dwb_upstream_free(other);
}

} // namespace
