// Deterministic synthetic DICOM cohort for tests and benchmarks: patients with non-ASCII and case-variant
// names, studies spread over 2019-2024, several modalities, small 16-bit images, and a manifest.json that lists
// every instance with its key attributes as UTF-8 (a flat array under "instances").
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

struct Opts {
    std::string out;
    int patients = 4, studies = 2, series = 2, instances = 3, seed = 1, rows = 16, cols = 16;
    bool latin1_patient = false;
    std::vector<std::string> modalities = {"CT", "MR", "CR"};
};

uint64_t fnv(const std::string &s) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

std::string uid(const Opts &o, const std::string &what) {
    // 2.25.<decimal>: UUID-derived root (PS3.5 B.2); two 64-bit hashes keep collisions out of reach.
    uint64_t a = fnv("dwb-cohort/" + std::to_string(o.seed) + "/" + what);
    uint64_t b = fnv(what + "/salt/" + std::to_string(o.seed));
    char buf[64];
    snprintf(buf, sizeof buf, "2.25.%llu%019llu", (unsigned long long)(a % 9000000000000000000ULL + 1),
             (unsigned long long)(b % 10000000000000000000ULL));
    std::string s = buf;
    if (s.size() > 64) s.resize(64);
    return s;
}

const char *kNames[] = {"Müller^Jürgen", "SMITH^JOHN", "Smith^John", "Ødegård^Åse", "Γεωργίου^Νίκος",
                        "山田^太郎=山田^太郎=やまだ^たろう", "DOE^JANE", "Иванов^Иван"};
const char *kStudyDesc[] = {"CT CHEST", "MR BRAIN", "CR HAND", "CT ABDOMEN & PELVIS"};
const char *kBody[] = {"CHEST", "HEAD", "HAND", "ABDOMEN"};

std::string sop_class(const std::string &mod) {
    if (mod == "CT") return UID_CTImageStorage;
    if (mod == "MR") return UID_MRImageStorage;
    if (mod == "CR") return UID_ComputedRadiographyImageStorage;
    return UID_SecondaryCaptureImageStorage;
}

std::string json_str(const std::string &s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += (char)c;
        } else if (c < 0x20) {
            char b[8];
            snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
        } else {
            o += (char)c;
        }
    }
    return o + "\"";
}

std::string latin1(const std::string &utf8) {
    std::string o;
    for (size_t i = 0; i < utf8.size(); i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c < 0x80) o += (char)c;
        else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
            o += (char)(((c & 0x1F) << 6) | ((unsigned char)utf8[i + 1] & 0x3F));
            i++;
        }
    }
    return o;
}

std::string date_for(int p, int s) {
    int day = (p * 97 + s * 211) % (6 * 365);
    int y = 2019 + day / 365, doy = day % 365;
    int m = doy / 31 + 1, d = doy % 28 + 1;
    if (m > 12) m = 12;
    char b[16];
    snprintf(b, sizeof b, "%04d%02d%02d", y, m, d);
    return b;
}

int usage() {
    fprintf(stderr, "usage: dwb_gencohort --out DIR [--patients N] [--studies N] [--series N] [--instances N] "
                    "[--seed N] [--rows N] [--cols N] [--modalities CT,MR,CR] [--latin1-patient]\n");
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    Opts o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&](int &v) {
            if (i + 1 >= argc) exit(usage());
            v = atoi(argv[++i]);
        };
        if (a == "--out" && i + 1 < argc) o.out = argv[++i];
        else if (a == "--patients") next(o.patients);
        else if (a == "--studies") next(o.studies);
        else if (a == "--series") next(o.series);
        else if (a == "--instances") next(o.instances);
        else if (a == "--seed") next(o.seed);
        else if (a == "--rows") next(o.rows);
        else if (a == "--cols") next(o.cols);
        else if (a == "--latin1-patient") o.latin1_patient = true;
        else if (a == "--modalities" && i + 1 < argc) {
            o.modalities.clear();
            std::string m = argv[++i];
            size_t p = 0;
            while (p <= m.size()) {
                size_t c = m.find(',', p);
                if (c == std::string::npos) c = m.size();
                if (c > p) o.modalities.push_back(m.substr(p, c - p));
                p = c + 1;
            }
        } else return usage();
    }
    if (o.out.empty() || o.patients < 1 || o.studies < 1 || o.series < 1 || o.instances < 1 || o.rows < 1 ||
        o.cols < 1 || o.modalities.empty())
        return usage();
    mkdir(o.out.c_str(), 0755);
    std::string manifest = "{\"instances\": [\n";
    int n = 0;
    for (int p = 0; p < o.patients; p++) {
        bool l1 = o.latin1_patient && p == o.patients - 1;
        std::string name = l1 ? "Gärtner^Björn" : kNames[p % 8];
        if (!l1 && p >= 8) name += std::to_string(p / 8);
        char pid[32];
        snprintf(pid, sizeof pid, "PID%04d", p);
        char birth[16];
        snprintf(birth, sizeof birth, "19%02d%02d%02d", 40 + p % 50, 1 + p % 12, 1 + p % 28);
        const char *sex = p % 2 ? "F" : "M";
        for (int s = 0; s < o.studies; s++) {
            std::string study_uid = uid(o, "study/" + std::to_string(p) + "/" + std::to_string(s));
            std::string sdate = date_for(p, s);
            char stime[16], acc[32], sid[16];
            snprintf(stime, sizeof stime, "%02d%02d%02d", 7 + (p + s) % 12, (p * 7 + s * 13) % 60, (p + s * 3) % 60);
            snprintf(acc, sizeof acc, "ACC%04d%02d", p, s);
            snprintf(sid, sizeof sid, "S%d", s + 1);
            const char *sdesc = kStudyDesc[(p + s) % 4];
            for (int k = 0; k < o.series; k++) {
                std::string series_uid = uid(o, "series/" + std::to_string(p) + "/" + std::to_string(s) + "/" +
                                                    std::to_string(k));
                std::string mod = o.modalities[(size_t)(s + k) % o.modalities.size()];
                std::string cls = sop_class(mod);
                char sdesc2[64];
                snprintf(sdesc2, sizeof sdesc2, "%s series %d", mod.c_str(), k + 1);
                for (int i = 0; i < o.instances; i++) {
                    std::string sop_uid = uid(o, "sop/" + std::to_string(p) + "/" + std::to_string(s) + "/" +
                                                     std::to_string(k) + "/" + std::to_string(i));
                    DcmFileFormat ff;
                    DcmDataset *ds = ff.getDataset();
                    ds->putAndInsertString(DCM_SpecificCharacterSet, l1 ? "ISO_IR 100" : "ISO_IR 192");
                    ds->putAndInsertString(DCM_PatientName, l1 ? latin1(name).c_str() : name.c_str());
                    ds->putAndInsertString(DCM_PatientID, pid);
                    ds->putAndInsertString(DCM_PatientBirthDate, birth);
                    ds->putAndInsertString(DCM_PatientSex, sex);
                    ds->putAndInsertString(DCM_StudyInstanceUID, study_uid.c_str());
                    ds->putAndInsertString(DCM_StudyDate, sdate.c_str());
                    ds->putAndInsertString(DCM_StudyTime, stime);
                    ds->putAndInsertString(DCM_AccessionNumber, acc);
                    ds->putAndInsertString(DCM_StudyID, sid);
                    ds->putAndInsertString(DCM_StudyDescription, sdesc);
                    ds->putAndInsertString(DCM_ReferringPhysicianName, "Referrer^Ray");
                    ds->putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str());
                    ds->putAndInsertString(DCM_Modality, mod.c_str());
                    ds->putAndInsertString(DCM_SeriesNumber, std::to_string(k + 1).c_str());
                    ds->putAndInsertString(DCM_SeriesDescription, sdesc2);
                    ds->putAndInsertString(DCM_SeriesDate, sdate.c_str());
                    ds->putAndInsertString(DCM_BodyPartExamined, kBody[(p + s) % 4]);
                    ds->putAndInsertString(DCM_SOPClassUID, cls.c_str());
                    ds->putAndInsertString(DCM_SOPInstanceUID, sop_uid.c_str());
                    ds->putAndInsertString(DCM_InstanceNumber, std::to_string(i + 1).c_str());
                    ds->putAndInsertString(DCM_ImageType, "ORIGINAL\\PRIMARY\\AXIAL");
                    ds->putAndInsertString(DCM_ContentDate, sdate.c_str());
                    ds->putAndInsertString(DCM_ContentTime, stime);
                    ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
                    ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
                    ds->putAndInsertUint16(DCM_Rows, (Uint16)o.rows);
                    ds->putAndInsertUint16(DCM_Columns, (Uint16)o.cols);
                    ds->putAndInsertUint16(DCM_BitsAllocated, 16);
                    ds->putAndInsertUint16(DCM_BitsStored, 12);
                    ds->putAndInsertUint16(DCM_HighBit, 11);
                    ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
                    if (mod == "CT") {
                        ds->putAndInsertString(DCM_RescaleIntercept, "-1024");
                        ds->putAndInsertString(DCM_RescaleSlope, "1");
                    }
                    std::vector<Uint16> px((size_t)o.rows * (size_t)o.cols);
                    for (size_t q = 0; q < px.size(); q++) px[q] = (Uint16)((q * 31 + (size_t)i * 7 + (size_t)p) & 0x0fff);
                    ds->putAndInsertUint16Array(DCM_PixelData, px.data(), (unsigned long)px.size());
                    char fname[32];
                    snprintf(fname, sizeof fname, "%06d.dcm", n);
                    std::string path = o.out + "/" + fname;
                    OFCondition c = ff.saveFile(path.c_str(), EXS_LittleEndianExplicit);
                    if (c.bad()) {
                        fprintf(stderr, "dwb_gencohort: cannot write %s: %s\n", path.c_str(), c.text());
                        return 1;
                    }
                    struct stat st;
                    stat(path.c_str(), &st);
                    std::map<std::string, std::string> m = {
                        {"PatientName", name}, {"PatientID", pid}, {"PatientBirthDate", birth}, {"PatientSex", sex},
                        {"StudyInstanceUID", study_uid}, {"StudyDate", sdate}, {"StudyTime", stime},
                        {"AccessionNumber", acc}, {"StudyID", sid}, {"StudyDescription", sdesc},
                        {"ReferringPhysicianName", "Referrer^Ray"}, {"SeriesInstanceUID", series_uid},
                        {"Modality", mod}, {"SeriesNumber", std::to_string(k + 1)}, {"SeriesDescription", sdesc2},
                        {"BodyPartExamined", kBody[(p + s) % 4]}, {"SOPClassUID", cls}, {"SOPInstanceUID", sop_uid},
                        {"InstanceNumber", std::to_string(i + 1)},
                        {"SpecificCharacterSet", l1 ? "ISO_IR 100" : "ISO_IR 192"}};
                    manifest += n ? ",\n  {" : "  {";
                    manifest += "\"file\": " + json_str(fname) + ", \"size\": " + std::to_string((long long)st.st_size);
                    for (auto &kv : m) manifest += ", " + json_str(kv.first) + ": " + json_str(kv.second);
                    manifest += "}";
                    n++;
                }
            }
        }
    }
    manifest += "\n]}\n";
    std::string mpath = o.out + "/manifest.json";
    FILE *f = fopen(mpath.c_str(), "w");
    if (!f) {
        fprintf(stderr, "dwb_gencohort: cannot write %s\n", mpath.c_str());
        return 1;
    }
    fputs(manifest.c_str(), f);
    fclose(f);
    printf("dwb_gencohort: %d instances in %s\n", n, o.out.c_str());
    return 0;
}
