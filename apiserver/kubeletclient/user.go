package kubeletclient

// User is the name the API server has towards kubelets. The default RBAC
// policy binds it to the cluster role system:kubelet-api-admin, which the
// kubelets' SubjectAccessReviews consult.
const User = "kube-apiserver-kubelet-client"
