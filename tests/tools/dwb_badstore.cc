// Test peer: sends C-STOREs whose command does not match the data set (which storescu cannot do), then a
// correct one on the same association. Prints one line per request: "status 0xNNNN comment <ErrorComment>".
// usage: dwb_badstore HOST PORT CALLED_AE FILE
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <cstdio>
#include <string>

static int store(T_ASC_Association *a, DcmDataset *ds, const char *cls, const char *sop, DIC_US id) {
    T_ASC_PresentationContextID pid = ASC_findAcceptedPresentationContextID(a, UID_CTImageStorage);
    T_DIMSE_C_StoreRQ rq = {};
    rq.MessageID = id;
    OFStandard::strlcpy(rq.AffectedSOPClassUID, cls, sizeof rq.AffectedSOPClassUID);
    OFStandard::strlcpy(rq.AffectedSOPInstanceUID, sop, sizeof rq.AffectedSOPInstanceUID);
    rq.DataSetType = DIMSE_DATASET_PRESENT;
    rq.Priority = DIMSE_PRIORITY_MEDIUM;
    T_DIMSE_C_StoreRSP rsp;
    DcmDataset *detail = nullptr;
    OFCondition c = DIMSE_storeUser(a, pid, &rq, nullptr, ds, nullptr, nullptr, DIMSE_BLOCKING, 0, &rsp, &detail);
    if (c.bad()) {
        printf("error %s\n", c.text());
        return 1;
    }
    OFString comment;
    if (detail) detail->findAndGetOFString(DCM_ErrorComment, comment);
    printf("status 0x%04x comment %s\n", rsp.DimseStatus, comment.c_str());
    delete detail;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: dwb_badstore HOST PORT CALLED_AE FILE\n");
        return 2;
    }
    DcmFileFormat ff;
    if (ff.loadFile(argv[4]).bad()) return 2;
    ff.getDataset()->loadAllDataIntoMemory();
    T_ASC_Network *net = nullptr;
    ASC_initializeNetwork(NET_REQUESTOR, 0, 30, &net);
    T_ASC_Parameters *params = nullptr;
    ASC_createAssociationParameters(&params, 16384);
    ASC_setAPTitles(params, "BADSTORE", argv[3], nullptr);
    std::string peer = std::string(argv[1]) + ":" + argv[2];
    ASC_setPresentationAddresses(params, "localhost", peer.c_str());
    const char *ts[] = {UID_LittleEndianExplicitTransferSyntax};
    ASC_addPresentationContext(params, 1, UID_CTImageStorage, ts, 1);
    T_ASC_Association *a = nullptr;
    if (ASC_requestAssociation(net, params, &a).bad()) {
        fprintf(stderr, "association failed\n");
        return 1;
    }
    OFString cls, sop;
    ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
    ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
    int rc = store(a, ff.getDataset(), cls.c_str(), "1.2.826.0.1.3680043.2.1143.999", 1); // instance UID differs
    rc |= store(a, ff.getDataset(), UID_MRImageStorage, sop.c_str(), 2);                  // class differs
    rc |= store(a, ff.getDataset(), cls.c_str(), sop.c_str(), 3);                         // correct
    ASC_releaseAssociation(a);
    ASC_destroyAssociation(&a);
    ASC_dropNetwork(&net);
    return rc;
}
